package models

import (
	"bytes"
	"fmt"
	"io"
	"os"

	gguf "github.com/gpustack/gguf-parser-go"

	"rbee.dev/shared/api"
)

// ggufMagic opens every GGUF file.
var ggufMagic = []byte("GGUF")

// isGGUF reports whether the file at path starts with the GGUF magic.
func isGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, len(ggufMagic))
	_, err = io.ReadFull(f, head)
	return err == nil && bytes.Equal(head, ggufMagic)
}

// readGGUF fills m's GGUF fields from the file at path: architecture,
// parameter count, quantisation, trained context length and the VRAM
// llama.cpp would need to serve it at that context with every layer
// offloaded (weights, KV cache and compute buffers, summed over devices, as
// gguf-parser-go estimates it). A file that is not GGUF leaves m alone and
// is no error: the catalog holds any file a worker can load.
//
// The parser trusts the file's own counts in places and can panic on a
// malformed one, so a panic is turned into an error here: a bad file must
// not take the hive down.
func readGGUF(path string, m *api.Model) (err error) {
	if !isGGUF(path) {
		return nil
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("parse GGUF metadata: %v", r)
		}
	}()
	gf, err := gguf.ParseGGUFFile(path, gguf.SkipLargeMetadata())
	if err != nil {
		return fmt.Errorf("parse GGUF metadata: %w", err)
	}
	md := gf.Metadata()
	arch := gf.Architecture()
	m.Architecture = md.Architecture
	m.Parameters = uint64(md.Parameters)
	if md.FileTypeDescriptor != "" && md.FileTypeDescriptor != "Unknown" {
		m.Quantization = md.FileTypeDescriptor
	}
	m.ContextLength = arch.MaximumContextLength
	if md.Type == "model" {
		m.VRAMEstimateBytes = vramEstimate(gf)
	}
	return nil
}

// vramEstimate is the device memory of llama.cpp's full offload at the
// model's trained context, or 0 when the estimate cannot be made.
func vramEstimate(gf *gguf.GGUFFile) (total uint64) {
	defer func() {
		if recover() != nil {
			total = 0
		}
	}()
	sum := gf.EstimateLLaMACppRun(gguf.WithinLLaMACppMaxContextSize()).Summarize(true, 0, 0)
	if len(sum.Items) == 0 {
		return 0
	}
	for _, v := range sum.Items[0].VRAMs {
		total += uint64(v.NonUMA)
	}
	return total
}
