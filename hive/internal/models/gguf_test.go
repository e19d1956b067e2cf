package models_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
)

// GGUF value types, from the format's specification.
const (
	ggufUint32 = 4
	ggufString = 8
	ggufArray  = 9
	ggufUint64 = 10
	ggufFloat  = 6
)

// ggufSpec shapes a test model file.
type ggufSpec struct {
	name     string
	fileType uint32 // general.file_type: 15 is MOSTLY_Q4_K_M
	ctx      uint32
	// rows of the one F32 tensor, 64 wide: the file is about rows*256 bytes.
	rows uint64
}

// makeGGUF writes a small but valid GGUF v3 file by hand: a llama header
// with the keys llama.cpp needs, a tiny vocabulary, and one F32 tensor.
func makeGGUF(tb testing.TB, s ggufSpec) []byte {
	tb.Helper()
	var b bytes.Buffer
	le := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			tb.Fatal(err)
		}
	}
	str := func(v string) { le(uint64(len(v))); b.WriteString(v) }
	const width = 64
	vocab := []string{"<unk>", "<s>", "</s>", "a"}
	type kv struct {
		key string
		put func()
	}
	u32 := func(v uint32) func() { return func() { le(uint32(ggufUint32)); le(v) } }
	sv := func(v string) func() { return func() { le(uint32(ggufString)); str(v) } }
	kvs := []kv{
		{"general.architecture", sv("llama")},
		{"general.name", sv(s.name)},
		{"general.file_type", u32(s.fileType)},
		{"general.alignment", u32(32)},
		{"llama.context_length", u32(s.ctx)},
		{"llama.embedding_length", u32(width)},
		{"llama.block_count", u32(1)},
		{"llama.feed_forward_length", u32(4 * width)},
		{"llama.attention.head_count", u32(8)},
		{"llama.attention.head_count_kv", u32(8)},
		{"llama.attention.layer_norm_rms_epsilon", func() { le(uint32(ggufFloat)); le(float32(1e-5)) }},
		{"tokenizer.ggml.model", sv("llama")},
		{"tokenizer.ggml.tokens", func() {
			le(uint32(ggufArray))
			le(uint32(ggufString))
			le(uint64(len(vocab)))
			for _, t := range vocab {
				str(t)
			}
		}},
	}
	b.WriteString("GGUF")
	le(uint32(3))
	le(uint64(1)) // tensors
	le(uint64(len(kvs)))
	for _, k := range kvs {
		str(k.key)
		k.put()
	}
	// One tensor: token_embd.weight, F32 (type 0), [width, rows], offset 0.
	str("token_embd.weight")
	le(uint32(2))
	le(uint64(width))
	le(s.rows)
	le(uint32(0))
	le(uint64(0))
	for b.Len()%32 != 0 {
		b.WriteByte(0)
	}
	for i := uint64(0); i < width*s.rows; i++ {
		le(math.Float32bits(float32(i%251) / 251))
	}
	return b.Bytes()
}
