package codec

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// fuzzArgs is a request argument of the shape servers decode: nested
// slices, maps, strings and integers, recursive through Kids and Next.
type fuzzArgs struct {
	A, B   int
	U      uint32
	F      float64
	Name   string
	Tags   []string
	Counts map[string]int
	Index  map[int][]string
	Raw    []byte
	Kids   []fuzzArgs
	Next   *fuzzArgs
}

func fuzzSeedValues() []any {
	full := fuzzArgs{
		A: 3, B: -4, U: 7, F: 1.5, Name: "hyp", Tags: []string{"x", "y"},
		Counts: map[string]int{"a": 1, "b": -2}, Index: map[int][]string{1: {"one"}, -1: nil},
		Raw:  []byte{0, 1, 2},
		Kids: []fuzzArgs{{A: 1, Name: "kid"}, {Tags: []string{""}}},
		Next: &fuzzArgs{Next: &fuzzArgs{Name: "deep"}},
	}
	return []any{
		full,
		fuzzArgs{},
		[]fuzzArgs{full, {}},
		map[string]any{"A": 1, "Name": "x", "Tags": []any{"t"}, "Kids": []any{map[string]any{"A": 2}}},
		[]any{nil, true, false, 1, -1, 300, -300, 70000, -70000, math.MaxInt64, math.MinInt64, uint64(math.MaxUint64), 0.5, float32(2.5)},
		"string",
		[]byte("bytes"),
		time.Unix(1700000000, 42).UTC(),
		deepArray(maxMsgPackDepth),
		deepMap(10),
		// Bodies of the wrong shape for fuzzArgs.
		nil,
		[]int{7, 8},
		map[string]any{"func": "Arith.Add", "args": []int{1, 2}, "kwargs": map[string]any{}},
		map[string]any{"A": 1, "Kids": []any{map[string]any{"C": 1}, []int{1}, nil}},
		map[string]any{"Next": map[string]any{"Next": []any{}}},
		map[string]any{"a": 1, "\u00e9": 2, "name": "x"},
	}
}

// FuzzMsgPack decodes arbitrary bytes with MsgPack: nothing may panic or
// crash, bodies refused by checkMsgPack must fail with ErrMalformed, and
// bodies it accepts must not make msgpack.Unmarshal itself panic.
func FuzzMsgPack(f *testing.F) {
	for _, v := range fuzzSeedValues() {
		data, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, data := range handWritten {
		f.Add(mustHex(data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkErr := checkMsgPack(data)
		if checkErr != nil && !errors.Is(checkErr, ErrMalformed) {
			t.Fatalf("checkMsgPack error %v does not wrap ErrMalformed", checkErr)
		}

		var args fuzzArgs
		err := MsgPack.Unmarshal(data, &args)
		if checkErr != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("refused body decoded into a struct: err = %v, want ErrMalformed", err)
		}
		if checkErr == nil {
			checkShapes(t, MsgPack, data, &args, err, func(v any) error { return msgpack.Unmarshal(data, v) })
		}
		var byName map[string][]*fuzzArgs // shapes of map values and slice elements
		_ = MsgPack.Unmarshal(data, &byName)
		var anyMap map[any]any
		_ = MsgPack.Unmarshal(data, &anyMap)
		var strAny map[string]any // maps read through DecodeMapLen (msgpackext.go)
		_ = MsgPack.Unmarshal(data, &strAny)
		var strStr map[string]string
		_ = MsgPack.Unmarshal(data, &strStr)
		var withTimes timed // exts that are read whole
		_ = MsgPack.Unmarshal(data, &withTimes)
		var in interned // fixext keys
		_ = MsgPack.Unmarshal(data, &in)
		var list []int
		_ = MsgPack.Unmarshal(data, &list)

		var v any
		err = MsgPack.Unmarshal(data, &v)
		if checkErr != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("refused body decoded into any: err = %v, want ErrMalformed", err)
			}
			return
		}

		// Accepted: the bare decoder must not panic either.
		var raw any
		rawErr := msgpack.Unmarshal(data, &raw)
		if (rawErr == nil) != (err == nil) {
			t.Fatalf("codec error %v, msgpack error %v", err, rawErr)
		}
		if rawErr != nil {
			return
		}
		// What was decoded encodes back to a body the check accepts.
		again, err := msgpack.Marshal(raw)
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", raw, err)
		}
		if err := checkMsgPack(again); err != nil {
			t.Fatalf("re-encoded body %x refused: %v", again, err)
		}
	})
}

// checkShapes checks what c's Unmarshal of data into args returned (err)
// against the library's own decoding, decode: a body refused with ErrShape
// is one the library decodes; a body accepted encodes back into a body
// that is accepted too, as whatever Go encodes must be.
func checkShapes(t *testing.T, c Codec, data []byte, args *fuzzArgs, err error, decode func(any) error) {
	t.Helper()
	if errors.Is(err, ErrShape) {
		if libErr := decode(new(fuzzArgs)); libErr != nil {
			t.Fatalf("body the library refuses (%v) refused with %v", libErr, err)
		}
		return
	}
	if err != nil {
		return
	}
	again, err := c.Marshal(args)
	if err != nil {
		t.Fatalf("re-encoding %#v: %v", args, err)
	}
	if err := c.Unmarshal(again, new(fuzzArgs)); err != nil {
		t.Fatalf("re-encoded body %q refused: %v", again, err)
	}
}

// FuzzJSON decodes arbitrary bytes with JSON: nothing may panic or crash.
func FuzzJSON(f *testing.F) {
	for _, v := range fuzzSeedValues() {
		data, err := json.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var args fuzzArgs
		err := JSON.Unmarshal(data, &args)
		checkShapes(t, JSON, data, &args, err, func(v any) error { return json.Unmarshal(data, v) })
		var byName map[string][]*fuzzArgs // shapes of map values and slice elements
		_ = JSON.Unmarshal(data, &byName)
		var list []int
		_ = JSON.Unmarshal(data, &list)
		var v any
		if JSON.Unmarshal(data, &v) != nil {
			return
		}
		if _, err := JSON.Marshal(v); err != nil {
			t.Fatalf("re-encoding %#v: %v", v, err)
		}
	})
}

// FuzzGob decodes arbitrary bytes with Gob: nothing may panic or crash.
// encoding/gob is not hardened against hostile bodies (see gob.go and
// TestGobMapBomb), so this only guards against regressions in what it does
// handle.
func FuzzGob(f *testing.F) {
	for _, v := range fuzzSeedValues() {
		if _, ok := v.(fuzzArgs); !ok {
			continue // gob needs registered types for interfaces
		}
		data, err := Gob.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, v := range []any{[]string{"a", "b"}, map[string][]int{"k": {1, 2}}, "s", 42} {
		data, err := Gob.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var args fuzzArgs
		_ = Gob.Unmarshal(data, &args)
		var m map[string][]int
		_ = Gob.Unmarshal(data, &m)
		var s []string
		_ = Gob.Unmarshal(data, &s)
		var v any
		_ = Gob.Unmarshal(data, &v)
	})
}
