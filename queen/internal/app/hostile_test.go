package app_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"rbee.dev/shared/api"
)

// hostile is one request an attacker might send, and the status it must get.
type hostile struct {
	name, method, path string
	body               string
	// chunked sends the body without a Content-Length, so only the reader
	// limit can stop it.
	chunked bool
	hdr     map[string]string
	status  int
}

// hostileJob is a valid hive_check on h1: cases that attack a header send it
// so that the header alone decides.
const hostileJob = `{"operation":"hive_check","hive":"h1","events":1}`

func hostileCases() []hostile {
	post := func(name, body string, status int) hostile {
		return hostile{name: name, method: "POST", path: "/v1/jobs", body: body, status: status}
	}
	get := func(name, path string, status int) hostile {
		return hostile{name: name, method: "GET", path: path, status: status}
	}
	withHeader := func(h hostile, k, v string) hostile {
		h.hdr = map[string]string{k: v}
		return h
	}
	withHeaders := func(h hostile, kv ...string) hostile {
		h.hdr = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.hdr[kv[i]] = kv[i+1]
		}
		return h
	}
	delete := func(name, path string, status int) hostile {
		return hostile{name: name, method: "DELETE", path: path, status: status}
	}
	long := func(n int) string { return strings.Repeat("A", n) }
	nested := func(open, close string, n int) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}
	labels := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"operation":"status","labels":{`)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"bad key ` + strings.Repeat("x", i%50) + string(rune('a'+i%26)) + `":"v"`)
		}
		return b.String() + "}}"
	}
	args := func(n int) string {
		return `{"operation":"run","hive":"h1","command":["echo"` + strings.Repeat(`,"a"`, n-1) + `]}`
	}
	envs := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"operation":"run","hive":"h1","command":["env"],"env":{`)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"V` + strings.Repeat("9", i) + `":"x"`)
		}
		return b.String() + "}}"
	}
	mib := 1 << 20

	return []hostile{
		// Size: the body limit answers 413 whether or not the length is declared.
		post("body over 1 MiB", `{"operation":"status","labels":{"a":"`+long(mib)+`"}}`, 413),
		{name: "chunked body over 1 MiB", method: "POST", path: "/v1/jobs", body: `{"operation":"run","hive":"h1","command":["` + long(2*mib) + `"]}`, chunked: true, status: 413},
		post("1 MiB of whitespace", strings.Repeat(" ", mib+1)+`{"operation":"status"}`, 413),

		// Nesting: the decoder's depth limit, not the stack, ends these.
		post("100k open brackets", strings.Repeat("[", 100_000), 400),
		post("100k nested arrays", nested("[", "]", 100_000), 400),
		post("deep object in labels", `{"operation":"status","labels":`+nested(`{"a":`, "}", 50_000)+`}`, 400),
		post("deep array in command", `{"operation":"run","hive":"h1","command":`+nested("[", "]", 20_000)+`}`, 400),

		// Wrong types in every field.
		post("operation as number", `{"operation":42}`, 400),
		post("operation as array", `{"operation":["run"]}`, 400),
		post("operation as object", `{"operation":{"$ne":null}}`, 400),
		post("hive as object", `{"operation":"hive_check","hive":{"id":"h1"}}`, 400),
		post("command as string", `{"operation":"run","hive":"h1","command":"rm -rf /"}`, 400),
		post("command with a number", `{"operation":"run","hive":"h1","command":["echo",1]}`, 400),
		post("env as array", `{"operation":"run","hive":"h1","command":["env"],"env":["A=1"]}`, 400),
		post("env value as number", `{"operation":"run","hive":"h1","command":["env"],"env":{"A":1}}`, 400),
		post("dir as number", `{"operation":"run","hive":"h1","command":["ls"],"dir":0}`, 400),
		post("events as float", `{"operation":"hive_check","hive":"h1","events":1.5}`, 400),
		post("events 1e309", `{"operation":"hive_check","hive":"h1","events":1e309}`, 400),
		post("events as -0.0", `{"operation":"hive_check","hive":"h1","events":-0.0}`, 400),
		post("events -0 on status", `{"operation":"status","events":-0}`, 400),
		post("events beyond int64", `{"operation":"hive_check","hive":"h1","events":99999999999999999999}`, 400),
		post("events with 10k digits", `{"operation":"hive_check","hive":"h1","events":`+strings.Repeat("9", 10_000)+`}`, 400),
		post("events over the cap", `{"operation":"hive_check","hive":"h1","events":10000001}`, 400),
		post("payload_bytes huge", `{"operation":"hive_check","hive":"h1","payload_bytes":1099511627776}`, 400),
		post("timeout_s negative", `{"operation":"status","timeout_s":-1}`, 400),
		post("timeout_s NaN as string", `{"operation":"status","timeout_s":"NaN"}`, 400),
		post("timeout_s NaN literal", `{"operation":"status","timeout_s":NaN}`, 400),
		post("timeout_s huge", `{"operation":"status","timeout_s":1e308}`, 400),
		post("timeout_s as bool", `{"operation":"status","timeout_s":true}`, 400),
		post("labels as array", `{"operation":"status","labels":["a=b"]}`, 400),
		post("label value as number", `{"operation":"status","labels":{"a":1}}`, 400),
		post("gpus with strings", `{"operation":"worker_spawn","model_id":"m","backend":"reference","gpus":["0"]}`, 400),
		post("gpus out of range", `{"operation":"worker_spawn","model_id":"m","backend":"reference","gpus":[-1,100000]}`, 400),
		post("body is a string", `"run"`, 400),
		post("body is a huge number", strings.Repeat("7", 50_000), 400),
		post("body is null", `null`, 400),
		post("body is true", `true`, 400),
		post("array of jobs", `[{"operation":"status"}]`, 400),

		// Control characters and NUL bytes.
		post("NUL in operation", `{"operation":"sta\u0000tus"}`, 400),
		post("raw NUL byte in JSON", "{\"operation\":\"sta\x00tus\"}", 400),
		post("CRLF in hive", `{"operation":"hive_check","hive":"h1\r\nX-Injected: 1"}`, 400),
		post("NUL in hive", `{"operation":"hive_check","hive":"h1\u0000"}`, 400),
		post("NUL in label key", `{"operation":"status","labels":{"zone\u0000":"a"}}`, 400),
		post("bell in label value", `{"operation":"status","labels":{"zone":"a\u0007"}}`, 400),
		post("ESC sequence in label value", `{"operation":"status","labels":{"zone":"\u001b[2J"}}`, 400),
		post("= in env key", `{"operation":"run","hive":"h1","command":["env"],"env":{"LD_PRELOAD=x":"y"}}`, 400),
		post("NUL in env key", `{"operation":"run","hive":"h1","command":["env"],"env":{"A\u0000B":"y"}}`, 400),
		post("empty env key", `{"operation":"run","hive":"h1","command":["env"],"env":{"":"y"}}`, 400),
		post("NUL in command arg", `{"operation":"run","hive":"h1","command":["echo","a\u0000b"]}`, 400),
		post("NUL in command[0]", `{"operation":"run","hive":"h1","command":["/bin/sh\u0000ignored"]}`, 400),
		post("empty command[0]", `{"operation":"run","hive":"h1","command":["","x"]}`, 400),
		post("NUL in dir", `{"operation":"run","hive":"h1","command":["ls"],"dir":"/tmp\u0000/x"}`, 400),
		post("newline in source", `{"operation":"model_download","source":"https://x/a\nb"}`, 400),

		// Path traversal and subject injection through ids in bodies.
		post("hive ../../etc", `{"operation":"hive_check","hive":"../../etc"}`, 400),
		post("hive absolute path", `{"operation":"hive_check","hive":"/etc/passwd"}`, 400),
		post("hive backslashes", `{"operation":"hive_check","hive":"..\\..\\windows"}`, 400),
		post("hive NATS wildcard", `{"operation":"hive_check","hive":"h1.>"}`, 400),
		post("hive NATS star", `{"operation":"hive_check","hive":"*"}`, 400),
		post("label key with a dot", `{"operation":"status","labels":{"a.b":"c"}}`, 400),
		post("model_id traversal", `{"operation":"model_get","model_id":"../../etc/passwd"}`, 400),
		post("model_id encoded traversal", `{"operation":"model_delete","model_id":"..%2f..%2fetc"}`, 400),
		post("model_id absolute", `{"operation":"model_get","model_id":"/etc/passwd"}`, 400),
		post("model_id backslash", `{"operation":"model_delete","model_id":"a\\..\\b"}`, 400),
		post("model_id dotfile", `{"operation":"model_get","model_id":".bashrc"}`, 400),
		post("download model_id traversal", `{"operation":"model_download","source":"hf:a/b:c.gguf","model_id":"../x"}`, 400),
		post("source file scheme", `{"operation":"model_download","source":"file:///etc/shadow"}`, 400),
		post("worker_id traversal", `{"operation":"worker_stop","worker_id":"../w"}`, 400),
		post("backend traversal", `{"operation":"worker_spawn","model_id":"m","backend":"../../bin/sh"}`, 400),

		// Overlong strings and too many items.
		post("hive of 65 chars", `{"operation":"hive_check","hive":"`+strings.Repeat("h", 65)+`"}`, 400),
		post("label value of 10k", `{"operation":"status","labels":{"a":"`+long(10_000)+`"}}`, 400),
		post("model_id of 129", `{"operation":"model_get","model_id":"`+strings.Repeat("m", 129)+`"}`, 400),
		post("source of 5000", `{"operation":"model_download","source":"https://x/`+long(5000)+`"}`, 400),
		post("sha256 not hex", `{"operation":"model_download","source":"hf:a/b:c.gguf","sha256":"`+strings.Repeat("z", 64)+`"}`, 400),
		post("unknown field of 10k", `{"operation":"status","`+long(10_000)+`":1}`, 400),
		post("2000 bad labels", labels(2000), 400),
		post("1025 command args", args(1025), 400),
		post("257 env vars", envs(257), 400),

		// Encodings and JSON dialects.
		post("invalid UTF-8 operation", "{\"operation\":\"\xff\xfe\xfd\"}", 400),
		post("lone surrogate", `{"operation":"\ud800"}`, 400),
		post("UTF-8 BOM", "\xef\xbb\xbf"+hostileJob, 400),
		post("UTF-16 body", "\xff\xfe{\x00\"\x00o\x00\"\x00:\x001\x00}\x00", 400),
		post("duplicate key, last invalid", `{"operation":"hive_check","hive":"h1","hive":"../x"}`, 400),
		post("case-folded duplicate", `{"operation":"status","OPERATION":"launch"}`, 400),
		post("trailing garbage", `{"operation":"status"} rm -rf /`, 400),
		post("trailing comma", `{"operation":"status",}`, 400),
		post("block comment", `{/* hi */"operation":"status"}`, 400),
		post("line comment", "{\"operation\":\"status\" // hi\n}", 400),
		post("single quotes", `{'operation':'status'}`, 400),
		post("raw newline in string", "{\"operation\":\"sta\ntus\"}", 400),
		post("empty key", `{"":"status"}`, 400),

		// Unknown operations that look like injections.
		post("shell injection op", `{"operation":"status; rm -rf / #"}`, 400),
		post("html op", `{"operation":"<script>alert(1)</script>"}`, 400),
		post("log4j op", `{"operation":"${jndi:ldap://evil/x}"}`, 400),
		post("sql op", `{"operation":"' OR 1=1 --"}`, 400),
		post("template op", `{"operation":"{{.Env.HF_TOKEN}}"}`, 400),
		post("upper-case op", `{"operation":"STATUS"}`, 400),
		post("long unknown op", `{"operation":"`+long(100_000)+`"}`, 400),

		// Headers.
		withHeader(post("Idempotency-Key of 256", hostileJob, 400), "Idempotency-Key", strings.Repeat("k", 256)),
		withHeader(post("Idempotency-Key of 100k", hostileJob, 400), "Idempotency-Key", strings.Repeat("k", 100_000)),
		withHeader(post("Idempotency-Key with a tab", hostileJob, 400), "Idempotency-Key", "a\tb"),
		withHeader(post("Idempotency-Key in UTF-8", hostileJob, 400), "Idempotency-Key", "ключ"),
		withHeader(get("Last-Event-ID letters", "/v1/jobs/x/stream", 400), "Last-Event-ID", "abc"),
		withHeader(get("Last-Event-ID negative", "/v1/jobs/x/stream", 400), "Last-Event-ID", "-5"),
		withHeader(get("Last-Event-ID overflow", "/v1/jobs/x/stream", 400), "Last-Event-ID", "18446744073709551616"),
		withHeader(get("Last-Event-ID inner space", "/v1/jobs/x/stream", 400), "Last-Event-ID", "4 2"),
		withHeader(get("Last-Event-ID hex", "/v1/jobs/x/stream", 400), "Last-Event-ID", "0x10"),
		withHeader(get("Last-Event-ID exponent", "/v1/jobs/x/stream", 400), "Last-Event-ID", "1e5"),
		withHeader(get("Last-Event-ID of 10k digits", "/v1/jobs/x/stream", 400), "Last-Event-ID", strings.Repeat("1", 10_000)),
		get("last_event_id leading space", "/v1/jobs/x/stream?last_event_id=%2042", 400),
		get("last_event_id plus sign", "/v1/jobs/x/stream?last_event_id=%2B1", 400),
		withHeader(post("multipart body", "--x\r\nContent-Disposition: form-data; name=\"operation\"\r\n\r\nrun\r\n--x--\r\n", 415), "Content-Type", "multipart/form-data; boundary=x"),
		withHeader(post("text/html body", "<b>run</b>", 415), "Content-Type", "text/html"),

		// Browsers on other sites. A text/plain or form post, and a body
		// with no type at all, need no CORS preflight: the queen must not
		// read them as JSON.
		withHeader(post("text/plain job (simple cross-site request)", hostileJob, 415), "Content-Type", "text/plain"),
		withHeader(post("form-encoded job", hostileJob, 415), "Content-Type", "application/x-www-form-urlencoded"),
		withHeader(post("job without a content type", hostileJob, 415), "Content-Type", ""),
		withHeaders(post("job from another site", hostileJob, 403), "Origin", "https://evil.example", "Content-Type", "application/json"),
		withHeaders(post("text/plain job from another site", hostileJob, 403), "Origin", "https://evil.example", "Content-Type", "text/plain"),
		withHeader(post("job from a sandboxed frame", hostileJob, 403), "Origin", "null"),
		withHeader(post("job from another port of loopback", hostileJob, 403), "Origin", "http://127.0.0.1:1"),
		withHeader(get("jobs read from another site", "/v1/jobs", 403), "Origin", "http://evil.example"),
		withHeader(post("job marked cross-site", hostileJob, 403), "Sec-Fetch-Site", "cross-site"),
		withHeader(get("stream fetched cross-site", "/v1/jobs/x/stream", 403), "Sec-Fetch-Site", "cross-site"),
		withHeaders(post("cross-site post claiming navigation", hostileJob, 403), "Sec-Fetch-Site", "cross-site", "Sec-Fetch-Mode", "navigate"),
		withHeader(delete("cancel from another site", "/v1/jobs/x", 403), "Origin", "https://evil.example"),
		// DNS rebinding: the attacker's name resolves to the queen.
		withHeader(post("job for a rebound name", hostileJob, 421), "Host", "rebind.evil.example"),
		withHeader(get("jobs read by a rebound name", "/v1/jobs", 421), "Host", "rebind.evil.example:7833"),
		withHeader(get("metrics by a rebound name", "/metrics", 421), "Host", "localhost.evil.example"),
		withHeader(post("unparsable content type", hostileJob, 415), "Content-Type", ";;;=/"),
		withHeader(post("content type of 10k", hostileJob, 415), "Content-Type", "application/"+long(10_000)),

		// Ids in URLs.
		get("encoded dots job", "/v1/jobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),
		get("encoded dots stream", "/v1/jobs/%2e%2e/stream", 404),
		get("hive traversal", "/v1/hives/..%2F..%2Fetc", 404),
		get("hive URL backslashes", "/v1/hives/..%5c..%5cwindows", 404),
		get("hive wildcard", "/v1/hives/h1.%3E", 404),
		get("job NUL", "/v1/jobs/%00", 404),
		get("job with a dot", "/v1/jobs/a.b", 404),
		get("job star", "/v1/jobs/*", 404),
		get("job id of 10k", "/v1/jobs/"+long(10_000), 404),
		get("absolute path route", "/v1/jobs//etc/passwd", 404),
		get("unknown route of 10k", "/v1/"+long(10_000), 404),
		{name: "cancel traversal", method: "DELETE", path: "/v1/jobs/..%5c..%5cwindows", status: 404},
		{name: "cancel of 65 chars", method: "DELETE", path: "/v1/jobs/" + strings.Repeat("j", 65), status: 404},

		// Methods.
		{name: "PUT a job", method: "PUT", path: "/v1/jobs/x", body: hostileJob, status: 405},
		{name: "PATCH a job", method: "PATCH", path: "/v1/jobs/x", body: `{"state":"done"}`, status: 405},
		{name: "POST to a job", method: "POST", path: "/v1/jobs/x", body: hostileJob, status: 405},
		{name: "DELETE all jobs", method: "DELETE", path: "/v1/jobs", status: 405},
		{name: "POST a hive", method: "POST", path: "/v1/hives", body: `{"id":"evil"}`, status: 405},
		{name: "TRACE", method: "TRACE", path: "/v1/jobs", status: 405},
		{name: "made-up method", method: "FOOBARHOSTILE", path: "/v1/jobs", body: hostileJob, status: 405},

		// Query parameters.
		get("limit -1", "/v1/jobs?limit=-1", 400),
		get("limit abc", "/v1/jobs?limit=abc", 400),
		get("limit overflow", "/v1/jobs?limit=99999999999999999999", 400),
		get("limit exponent", "/v1/jobs?limit=1e3", 400),
		get("state script", "/v1/jobs?state=%3Cscript%3Ealert(1)%3C/script%3E", 400),
		get("state of 10k", "/v1/jobs?state="+long(10_000), 400),
		get("operation traversal", "/v1/jobs?operation=../../x", 400),
		get("hive filter wildcard", "/v1/jobs?hive=h1.%3E", 400),
		get("hive filter NUL", "/v1/jobs?hive=%00", 400),
	}
}

// Hostile requests of every kind get a 4xx in the JSON error shape, with a
// short valid message that does not hand the input back, create no job and
// leave the queen healthy.
func TestHostileRequests(t *testing.T) {
	base, _ := cluster(t)
	cases := hostileCases()
	seen := map[string]bool{}
	for _, tc := range cases {
		if seen[tc.name] {
			t.Fatalf("case %q twice", tc.name)
		}
		seen[tc.name] = true
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
				if tc.chunked {
					body = io.MultiReader(body)
				}
			}
			req, err := http.NewRequest(tc.method, base+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.body != "" {
				req.Header.Set("Content-Type", "application/json")
			}
			for k, v := range tc.hdr {
				if k == "Host" {
					req.Host = v
					continue
				}
				req.Header.Set(k, v)
				if v == "" {
					req.Header.Del(k)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			var eb api.ErrorBody
			if err := json.Unmarshal(data, &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("status %d, not the JSON error shape: %.300q", resp.StatusCode, data)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s: %.300s), want %d", resp.StatusCode, eb.Error.Code, eb.Error.Message, tc.status)
			}
			msg := eb.Error.Message
			if msg == "" || !utf8.ValidString(msg) || len(msg) > 4<<10 {
				t.Fatalf("message of %d bytes, valid UTF-8 %v: %.300q", len(msg), utf8.ValidString(msg), msg)
			}
			input := tc.method + " " + tc.path + "\n" + tc.body
			for _, v := range tc.hdr {
				input += "\n" + v
			}
			if n := echoed(msg, input); n > 0 {
				t.Fatalf("message hands back %d+ bytes of the input: %.300q", n, msg)
			}
			t.Logf("%d %s: %.160s", resp.StatusCode, eb.Error.Code, msg)
		})
	}
	if len(cases) < 50 {
		t.Fatalf("only %d hostile cases", len(cases))
	}

	var list api.JobList
	if code := do(t, "GET", base+"/v1/jobs", nil, &list); code != 200 || len(list.Jobs) != 0 {
		t.Fatalf("after hostile requests: status %d, %d jobs, want none", code, len(list.Jobs))
	}
	if code := status(t, base+"/readyz"); code != 200 {
		t.Fatalf("readyz %d after hostile requests", code)
	}
	if code := status(t, base+"/v1/hives/h1"); code != 200 {
		t.Fatalf("hive h1: status %d after hostile requests", code)
	}
	// Nothing an attacker chose may become a metric label: every distinct
	// method or path would be a new series kept for the life of the queen.
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metrics, _ := io.ReadAll(resp.Body)
	for _, bad := range []string{"FOOBARHOSTILE", "AAAAAAAAAA", "passwd", "%2e%2e"} {
		if strings.Contains(string(metrics), bad) {
			t.Errorf("/metrics holds %q from a hostile request", bad)
		}
	}
}

// echoed reports whether msg holds a long run of input: it returns the
// window length when some 200-byte piece of msg, taken at a multiple of 100,
// occurs in input (so any shared run of 300 bytes or more is caught), else
// 0.
func echoed(msg, input string) int {
	const window = 200
	for i := 0; i+window <= len(msg); i += 100 {
		if strings.Contains(input, msg[i:i+window]) {
			return window
		}
	}
	return 0
}
