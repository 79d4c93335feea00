package codec_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/amqprpc/amqprpc/codec"
)

type args struct {
	A, B int
	Name string
	Tags []string
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []codec.Codec{codec.MsgPack, codec.JSON, codec.Gob} {
		t.Run(c.ContentType(), func(t *testing.T) {
			in := args{A: 3, B: 4, Name: "hyp", Tags: []string{"x", "y"}}
			data, err := c.Marshal(in)
			require.NoError(t, err)
			var out args
			require.NoError(t, c.Unmarshal(data, &out))
			assert.Equal(t, in, out)
			assert.NoError(t, c.Unmarshal(data, nil), "a nil target discards the body")
		})
	}
}

func TestGarbageIsAnError(t *testing.T) {
	for _, c := range []codec.Codec{codec.MsgPack, codec.JSON, codec.Gob} {
		t.Run(c.ContentType(), func(t *testing.T) {
			var out args
			assert.Error(t, c.Unmarshal([]byte{0xc1, 0xff, 0x00, '{'}, &out))
		})
	}
}

// Raw payloads take a fast path that must match msgpack's own encoding.
func TestMsgPackRawBytes(t *testing.T) {
	for _, n := range []int{0, 1, 255, 256, 4095, 4096, 65535, 65536, 70000} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i)
		}
		fast, err := codec.MsgPack.Marshal(b)
		require.NoError(t, err)
		want, err := msgpack.Marshal(b)
		require.NoError(t, err)
		assert.Equal(t, want, fast, "n=%d", n)
		viaPtr, err := codec.MsgPack.Marshal(&b) // how net/rpc hands over a reply
		require.NoError(t, err)
		assert.Equal(t, want, viaPtr, "n=%d, *[]byte", n)
		var out []byte
		require.NoError(t, codec.MsgPack.Unmarshal(fast, &out))
		assert.Equal(t, b, out)
	}
	for _, v := range []any{[]byte(nil), new([]byte), (*[]byte)(nil)} { // nil slices and pointers encode as nil
		fast, err := codec.MsgPack.Marshal(v)
		require.NoError(t, err)
		want, err := msgpack.Marshal(v)
		require.NoError(t, err)
		assert.Equal(t, want, fast, "%#v", v)
	}
	var out []byte
	assert.Error(t, codec.MsgPack.Unmarshal([]byte{0xc4, 0x05, 1, 2}, &out), "a short bin is refused")
}

// BenchmarkUnmarshal decodes the bodies a server decodes most: small
// struct args and a raw payload.
func BenchmarkUnmarshal(b *testing.B) {
	type pair struct{ A, B int }
	raw := make([]byte, 64<<10)
	for _, bc := range []struct {
		name string
		c    codec.Codec
		in   any
		out  func() any
	}{
		{"msgpack/args", codec.MsgPack, pair{A: 3, B: 4}, func() any { return new(pair) }},
		{"msgpack/bytes64k", codec.MsgPack, raw, func() any { return new([]byte) }},
		{"json/args", codec.JSON, pair{A: 3, B: 4}, func() any { return new(pair) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data, err := bc.c.Marshal(bc.in)
			require.NoError(b, err)
			out := bc.out()
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.c.Unmarshal(data, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
