package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// extWrapped returns an ext32 of type 0x30 whose data is payload.
func extWrapped(payload []byte) []byte {
	b := []byte{0xc9, 0, 0, 0, 0, 0x30}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

type withAny struct{ Data any }

type embedsAny struct{ withAny } // inlined: its key is Data

// interned has msgpack/v5 keep the strings of Name in a dictionary, to
// which later keys may refer with a fixext.
type interned struct {
	Name   string `msgpack:",intern"`
	Counts map[string]any
}

// extBombs are bodies that checkMsgPack accepts, because it reads ext data
// as opaque bytes, but from whose ext data msgpack/v5 would read a map
// when decoding them into the value target returns. Without
// checkMsgPackExts most of them end the process with a fatal out of
// memory (map[string]any preallocates all the entries a map header
// claims; other maps up to a million of them).
func extBombs() map[string]struct {
	data   []byte
	target func() any
} {
	type bomb = struct {
		data   []byte
		target func() any
	}
	mapAny := func() any { return new(map[string]any) }
	args := func() any { return new(fuzzArgs) }
	return map[string]bomb{
		// The body the fuzzer found: an ext8 whose data is a map of one
		// entry whose value is a map32 header of 4G entries.
		"ext8 map in data, map[string]any":          {mustHex("c7 08 30 81 a1 6b df ff ff ff ff"), mapAny},
		"ext8 map in data, map[string]string":       {mustHex("c7 08 30 81 a1 6b df ff ff ff ff"), func() any { return new(map[string]string) }},
		"ext8 map in data, map[string]int":          {mustHex("c7 08 30 81 a1 6b df ff ff ff ff"), func() any { return new(map[string]int) }},
		"ext8 map in data, map[any]any":             {mustHex("c7 08 30 81 a1 6b df ff ff ff ff"), func() any { return new(map[any]any) }},
		"ext8 map32 header":                         {mustHex("c7 05 30 df ff ff ff ff"), mapAny},
		"ext8 map32 header, map[string]string":      {mustHex("c7 05 30 df ff ff ff ff"), func() any { return new(map[string]string) }},
		"ext16 map in data":                         {mustHex("c8 0008 30 81 a1 6b df ff ff ff ff"), mapAny},
		"ext32 map in data":                         {mustHex("c9 00000008 30 81 a1 6b df ff ff ff ff"), mapAny},
		"fixext8 map in data":                       {mustHex("d7 30 81 a1 6b df ff ff ff ff"), mapAny},
		"fixext16 map32 header":                     {mustHex("d8 30 df ff ff ff ff 00 00 00 00 00 00 00 00 00 00 00"), mapAny},
		"fixext4 count ends past the ext":           {mustHex("92 d6 30 df ff ff ff 01"), func() any { return new([]map[string]any) }},
		"fixext2 map read on into a bin":            {mustHex("92 d5 30 81 a2 c4 05 df ff ff ff ff"), func() any { return new([]map[string]any) }},
		"ext8 with no data":                         {mustHex("81 a6 436f756e7473 c7 00 30"), args},
		"fixext1 nil":                               {mustHex("81 a6 436f756e7473 d4 30 c0"), args},
		"struct field map[string]int":               {mustHex("81 a6 436f756e7473 c7 05 30 df ff ff ff ff"), args},
		"struct field map[int][]string":             {mustHex("81 a5 496e646578 d7 30 81 01 dd ff ff ff ff 00"), args},
		"nested struct field":                       {mustHex("81 a4 4e657874 81 a6 436f756e7473 c7 05 30 df ff ff ff ff"), args},
		"struct in a slice":                         {mustHex("81 a4 4b696473 91 81 a6 436f756e7473 d7 30 81 a1 6b df ff ff ff ff"), args},
		"struct from an array, by position":         {mustHex("9b 00 00 00 00 a0 c0 c7 05 30 df ff ff ff ff c0 c0 c0 c0"), args},
		"map value of map type":                     {mustHex("81 a1 6b c7 05 30 df ff ff ff ff"), func() any { return new(map[string]map[string]int) }},
		"slice element of map type":                 {mustHex("91 c7 05 30 df ff ff ff ff"), func() any { return new([]map[string]any) }},
		"array element of map type":                 {mustHex("91 c7 05 30 df ff ff ff ff"), func() any { return new([1]map[string]any) }},
		"pointer to map":                            {mustHex("c7 05 30 df ff ff ff ff"), func() any { return new(*map[string]any) }},
		"map key of pointer-to-map type":            {mustHex("81 c7 05 30 df ff ff ff ff 01"), func() any { return new(map[*map[string]any]int) }},
		"nesting past the limit in ext data":        {extWrapped(append(append(mustHex("81 a1 6b"), bytes.Repeat([]byte{0x91}, 1<<20)...), 0x01)), mapAny},
		"interned key names a map field":            {mustHex("82 a4 4e616d65 a6 436f756e7473 d4 80 00 c7 05 30 df ff ff ff ff"), func() any { return new(interned) }},
		"map in a non-nil interface field":          {mustHex("81 a4 44617461 c7 05 30 df ff ff ff ff"), func() any { return &withAny{Data: new(map[string]any)} }},
		"map in a non-nil interface, inlined field": {mustHex("81 a4 44617461 c7 05 30 df ff ff ff ff"), func() any { return &embedsAny{withAny{Data: new(map[string]any)}} }},
		"map in a non-nil interface":                {mustHex("c7 05 30 df ff ff ff ff"), func() any { var v any = new(map[string]any); return &v }},
		"map in a non-nil interface in a slice":     {mustHex("91 c7 05 30 df ff ff ff ff"), func() any { return &[]any{new(map[string]any)} }},
		"map in an interface, beyond a slice len":   {mustHex("91 c7 05 30 df ff ff ff ff"), func() any { s := []any{new(map[string]any)}[:0]; return &s }},
	}
}

func TestMsgPackUnmarshalRefusesExtForMap(t *testing.T) {
	for name, b := range extBombs() {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, checkMsgPack(b.data), "the body is well-formed")
			err := MsgPack.Unmarshal(b.data, b.target())
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), "ext of type 48 where a ")
		})
	}
}

func TestMsgPackExtForMapErrorMessage(t *testing.T) {
	err := MsgPack.Unmarshal(mustHex("c7 08 30 81 a1 6b df ff ff ff ff"), new(map[string]any))
	assert.EqualError(t, err, "codec: malformed body: msgpack: ext of type 48 where a map[string]interface {} is expected at offset 0")
	err = MsgPack.Unmarshal(mustHex("81 a4 4e657874 81 a6 436f756e7473 d4 ff 00"), new(fuzzArgs))
	assert.EqualError(t, err, "codec: malformed body: msgpack: ext of type -1 where a map[string]int is expected at offset 14")
}

// timeWithFirstByte returns a time whose 8-byte msgpack encoding (fixext8,
// type -1) has data starting with b, then 0xff: the header of a map16 or
// map32 of many entries, or of a fixmap, if read as msgpack.
func timeWithFirstByte(b byte) time.Time {
	nsec := int64(b)<<22 | 0x3fffff // the data is nsec<<34 | sec
	return time.Unix(1700000000, nsec)
}

type timed struct {
	When   time.Time
	Times  []time.Time
	ByName map[string]time.Time
	Ptr    *time.Time
	Any    any
	Attrs  map[string]any
	Kids   []timed
}

func TestMsgPackTimesStillDecode(t *testing.T) {
	df, x85 := timeWithFirstByte(0xdf), timeWithFirstByte(0x85)
	in := timed{
		When:   df,
		Times:  []time.Time{x85, df, time.Unix(1700000000, 0), time.Unix(-1, 5)}, // also the 4- and 12-byte forms
		ByName: map[string]time.Time{"df": df, "85": x85},
		Ptr:    &x85,
		Any:    df,
		Attrs:  map[string]any{"t": x85, "n": int8(1)},
		Kids:   []timed{{When: x85, Ptr: &df}},
	}
	data, err := MsgPack.Marshal(in)
	require.NoError(t, err)
	require.True(t, bytes.Contains(data, mustHex("d7 ff df ff")), "the body holds a time whose data starts with df")
	require.True(t, bytes.Contains(data, mustHex("d7 ff 85 ff")), "the body holds a time whose data starts with 85")

	var out timed
	require.NoError(t, MsgPack.Unmarshal(data, &out))
	assert.Equal(t, in, out)

	for _, tm := range []time.Time{df, x85} {
		data, err := MsgPack.Marshal(tm)
		require.NoError(t, err)
		var got time.Time
		require.NoError(t, MsgPack.Unmarshal(data, &got))
		assert.Equal(t, tm, got)
		var v any
		require.NoError(t, MsgPack.Unmarshal(data, &v))
		assert.Equal(t, tm, v)
	}

	var m map[string]any // times inside a map[string]any are read whole
	data, err = MsgPack.Marshal(map[string]any{"df": df, "list": []any{x85}})
	require.NoError(t, err)
	require.NoError(t, MsgPack.Unmarshal(data, &m))
	assert.Equal(t, map[string]any{"df": df, "list": []any{x85}}, m)
}

// extPoint and extSet encode themselves as ext values, once registered
// with msgpack.RegisterExt.
type extPoint struct{ X, Y int8 }

func (p *extPoint) MarshalMsgpack() ([]byte, error) { return []byte{byte(p.X), byte(p.Y)}, nil }

func (p *extPoint) UnmarshalMsgpack(b []byte) error {
	if len(b) != 2 {
		return errors.New("extPoint: want 2 bytes")
	}
	p.X, p.Y = int8(b[0]), int8(b[1])
	return nil
}

// extSet is a map type: a registered ext decodes into it.
type extSet map[string]bool

func (s *extSet) MarshalMsgpack() ([]byte, error) { return msgpack.Marshal(map[string]bool(*s)) }

func (s *extSet) UnmarshalMsgpack(b []byte) error {
	var m map[string]bool
	if err := MsgPack.Unmarshal(b, &m); err != nil {
		return err
	}
	*s = m
	return nil
}

type withExts struct {
	P     extPoint
	S     extSet
	Ptr   *extSet
	ByKey map[string]*extPoint // map values are not addressable
}

func TestMsgPackRegisteredExtsStillDecode(t *testing.T) {
	msgpack.RegisterExt(0x31, (*extPoint)(nil))
	msgpack.RegisterExt(0x32, (*extSet)(nil))
	t.Cleanup(func() {
		msgpack.UnregisterExt(0x31)
		msgpack.UnregisterExt(0x32)
	})

	set := extSet{"a": true, "b": false}
	in := &withExts{
		P: extPoint{1, -2}, S: extSet{"x": true}, Ptr: &set,
		ByKey: map[string]*extPoint{"p": {3, 4}},
	}
	data, err := MsgPack.Marshal(in)
	require.NoError(t, err)
	require.True(t, bytes.Contains(data, mustHex("d5 31 01 fe")), "P is an ext")
	require.True(t, bytes.Contains(data, mustHex("d6 32 81 a1 78 c3")), "S is an ext")

	var out withExts
	require.NoError(t, MsgPack.Unmarshal(data, &out))
	assert.Equal(t, *in, out)

	data, err = MsgPack.Marshal(&set)
	require.NoError(t, err)
	var got extSet
	require.NoError(t, MsgPack.Unmarshal(data, &got))
	assert.Equal(t, set, got)
}

func BenchmarkCheckMsgPackExts(b *testing.B) {
	data, err := msgpack.Marshal(fullOuter()) // a time.Time and a map[string]any
	require.NoError(b, err)
	exts, err := scanMsgPack(data)
	require.NoError(b, err)
	require.True(b, exts)
	var out outer
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := checkMsgPackExts(data, &out); err != nil {
			b.Fatal(err)
		}
	}
}
