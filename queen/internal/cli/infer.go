package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"rbee.dev/queen/internal/client"
	"rbee.dev/shared/api"
)

func (a *app) inferCommand() *cobra.Command {
	var (
		req      client.ChatRequest
		system   string
		temp     float64
		maxToken int
	)
	cmd := &cobra.Command{
		Use:   "infer --model M [--max-tokens N] [--system TEXT] [--download SOURCE] PROMPT... | -",
		Short: "Ask a model through the queen's OpenAI API, printing tokens as they arrive",
		Long: `Send a chat completion to the queen's OpenAI-compatible API and print
the answer as it streams. The queen routes it to a ready worker for the
model on any hive, starting one where the model is on disk; with
--download it first fetches the model (hf:org/repo[:file] or a URL) if no
hive holds it. The prompt is the arguments joined by spaces, or standard
input when it is "-". With --json the whole answer, its job id and token
usage are printed as one JSON object at the end. An interrupt stops the
generation.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Model == "" {
				return usagef(cmd, "--model is required")
			}
			prompt := strings.Join(args, " ")
			if prompt == "-" {
				b, err := io.ReadAll(io.LimitReader(a.stdin, 1<<20))
				if err != nil {
					return err
				}
				prompt = string(b)
			}
			if strings.TrimSpace(prompt) == "" {
				return usagef(cmd, "a prompt is required: give it as arguments, or - to read standard input")
			}
			if system != "" {
				req.Messages = append(req.Messages, api.Message{Role: "system", Content: system})
			}
			req.Messages = append(req.Messages, api.Message{Role: "user", Content: prompt})
			req.MaxTokens = maxToken
			if cmd.Flags().Changed("temperature") {
				req.Temperature = &temp
			}
			var onToken func(string)
			if !a.json {
				onToken = func(t string) { fmt.Fprint(a.stdout, t) }
			}
			res, err := a.client.Chat(cmd.Context(), req, onToken)
			if !a.json && res.Content != "" {
				fmt.Fprintln(a.stdout)
			}
			if err != nil {
				return err
			}
			if a.json {
				return writeJSON(a.stdout, res)
			}
			if a.verbose {
				fmt.Fprintf(a.stderr, "job %s: %d prompt + %d completion tokens, %s\n",
					res.JobID, res.Usage.PromptTokens, res.Usage.CompletionTokens, orDash(res.FinishReason))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Model, "model", "", "model id, as GET /v1/models lists it")
	f.IntVar(&maxToken, "max-tokens", 0, "most tokens to generate (default: the worker's)")
	f.Float64Var(&temp, "temperature", 0, "sampling temperature")
	f.StringVar(&system, "system", "", "a system message before the prompt")
	f.StringVar(&req.Download, "download", "", "fetch the model from this source first if no hive holds it")
	return cmd
}
