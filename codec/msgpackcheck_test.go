package codec

import (
	"bytes"
	"encoding/hex"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// nested returns depth copies of open followed by leaf: open must be the
// header of a one-element array or one-entry map (with its key).
func nested(open []byte, depth int, leaf ...byte) []byte {
	return append(bytes.Repeat(open, depth), leaf...)
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

type inner struct {
	N    int
	S    string
	List []float64
}

type outer struct {
	ID    uint64
	Name  string
	Tags  []string
	Attrs map[string]any
	Kids  []inner
	Ptr   *inner
	Bytes []byte
	When  time.Time
	Neg   int8
	Big   int64
	F32   float32
	OK    bool
}

// validValues exercise every msgpack format msgpack.Marshal produces.
func validValues() map[string]any {
	many := func(n int) []int { return make([]int, n) }
	manyMap := func(n int) map[string]int {
		m := make(map[string]int, n)
		for i := range n {
			m[string(rune('a'+i%26))+strings.Repeat("x", i/26)] = i
		}
		return m
	}
	return map[string]any{
		"nil":           nil,
		"false":         false,
		"true":          true,
		"posfixint":     127,
		"negfixint":     -32,
		"uint8":         uint8(200),
		"uint16":        uint16(60000),
		"uint32":        uint32(4000000000),
		"uint64":        uint64(math.MaxUint64),
		"int8":          int8(-100),
		"int16":         int16(-30000),
		"int32":         int32(-2000000000),
		"int64":         int64(math.MinInt64),
		"float32":       float32(1.5),
		"float64":       math.Pi,
		"fixstr":        strings.Repeat("s", 31),
		"str8":          strings.Repeat("s", 255),
		"str16":         strings.Repeat("s", 65535),
		"str32":         strings.Repeat("s", 65536),
		"emptystr":      "",
		"bin8":          make([]byte, 255),
		"bin16":         make([]byte, 256),
		"bin32":         make([]byte, 65536),
		"emptybin":      []byte{},
		"fixarray":      many(15),
		"array16":       many(16),
		"array32":       many(65536),
		"emptyarray":    []int{},
		"fixmap":        manyMap(15),
		"map16":         manyMap(16),
		"map32":         manyMap(65536),
		"emptymap":      map[string]int{},
		"time32":        time.Unix(1700000000, 0).UTC(),        // fixext4
		"time64":        time.Unix(1700000000, 5).UTC(),        // fixext8
		"time96":        time.Unix(-1, 5).UTC(),                // ext8, 12 bytes
		"deep100":       deepArray(maxMsgPackDepth),            // exactly at the limit
		"deepmaps":      deepMap(maxMsgPackDepth),              // exactly at the limit
		"struct":        fullOuter(),                           // nested struct
		"structs":       []outer{fullOuter(), {}, fullOuter()}, // array of maps
		"mixed":         []any{1, "a", nil, []any{map[string]any{"k": []byte("v")}}, 2.5},
		"mapofarrays":   map[string][]string{"a": {"x", "y"}, "b": nil},
		"nestedempties": []any{[]any{}, map[string]any{}, "", []byte{}},
	}
}

func deepArray(depth int) any {
	var v any = 1
	for range depth {
		v = []any{v}
	}
	return v
}

func deepMap(depth int) any {
	var v any = "leaf"
	for range depth {
		v = map[string]any{"k": v}
	}
	return v
}

func fullOuter() outer {
	return outer{
		ID: 1 << 40, Name: "name", Tags: []string{"a", "b"},
		Attrs: map[string]any{"x": 1, "y": []any{"z", 2.5}, "n": nil},
		Kids:  []inner{{N: 1, S: "one", List: []float64{1, 2}}, {N: -1}},
		Ptr:   &inner{N: 7}, Bytes: []byte{0, 1, 2},
		When: time.Unix(1700000000, 123).UTC(), Neg: -5, Big: -1 << 40, F32: 0.25, OK: true,
	}
}

// handWritten are valid encodings msgpack.Marshal does not produce for the
// values above (ext formats with application types, non-string keys...).
var handWritten = map[string]string{
	"fixext1":         "d4 01 aa",
	"fixext2":         "d5 01 aa bb",
	"fixext4":         "d6 01 aa bb cc dd",
	"fixext8":         "d7 01 0102030405060708",
	"fixext16":        "d8 01 0102030405060708 090a0b0c0d0e0f10",
	"ext8":            "c7 03 05 aabbcc",
	"ext8 empty":      "c7 00 05",
	"ext16":           "c8 0002 05 aabb",
	"ext32":           "c9 00000001 05 aa",
	"str8":            "d9 02 6869",
	"str16":           "da 0002 6869",
	"str32":           "db 00000002 6869",
	"bin8":            "c4 01 00",
	"bin16":           "c5 0001 00",
	"bin32":           "c6 00000001 00",
	"array16":         "dc 0002 01 02",
	"array32":         "dd 00000002 01 02",
	"map16":           "de 0001 01 02",
	"map32":           "df 00000001 a161 c0",
	"array key":       "81 92 01 02 c3",
	"map key":         "81 81 01 02 c3",
	"negative fixint": "ff",
	"all scalars": "9f c0 c2 c3 ca 3fc00000 cb 3ff8000000000000 cc ff cd ffff ce ffffffff " +
		"cf ffffffffffffffff d0 80 d1 8000 d2 80000000 d3 8000000000000000 00 e0",
}

func TestCheckMsgPackAcceptsValid(t *testing.T) {
	for name, v := range validValues() {
		t.Run(name, func(t *testing.T) {
			data, err := msgpack.Marshal(v)
			require.NoError(t, err)
			require.NoError(t, checkMsgPack(data))

			var out any
			require.NoError(t, MsgPack.Unmarshal(data, &out))
		})
	}
	for name, s := range handWritten {
		t.Run("hand/"+name, func(t *testing.T) {
			assert.NoError(t, checkMsgPack(mustHex(s)))
		})
	}
}

// hostile are bodies that must be refused. Without the check, the array and
// map count bombs and the deep nesting crash msgpack.Unmarshal (fatal out of
// memory or stack overflow); msgpack/v5 reads str, bin and ext payloads in
// capped chunks, but their bombs are refused all the same.
func hostile() map[string][]byte {
	const big = 2 << 20
	return map[string][]byte{
		"array32 bomb":        mustHex("dd 0f ffffff"),
		"array32 max":         mustHex("dd ffffffff 01"),
		"array16 too long":    mustHex("dc ffff 01 02"),
		"fixarray too long":   mustHex("93 01 02"),
		"map32 bomb":          mustHex("df 0fffffff"),
		"map32 max":           mustHex("df ffffffff a161 01"),
		"map16 too long":      mustHex("de ffff 01 02"),
		"map half entry":      mustHex("82 01 02 03"),
		"fixmap key only":     mustHex("81 01"),
		"str32 bomb":          mustHex("db 7fffffff"),
		"str32 max":           mustHex("db ffffffff 6161"),
		"str16 too long":      mustHex("da 0100 61"),
		"str8 too long":       mustHex("d9 10 61"),
		"fixstr too long":     mustHex("a5 6161"),
		"bin32 bomb":          mustHex("c6 7fffffff"),
		"bin32 max":           mustHex("c6 ffffffff 00"),
		"bin16 too long":      mustHex("c5 0100 00"),
		"bin8 too long":       mustHex("c4 02 00"),
		"ext32 bomb":          mustHex("c9 7fffffff 05"),
		"ext32 max":           mustHex("c9 ffffffff 05 00"),
		"ext16 too long":      mustHex("c8 0100 05 00"),
		"ext8 too long":       mustHex("c7 02 05 00"),
		"ext8 no type":        mustHex("c7 00"),
		"fixext16 truncated":  mustHex("d8 01 00"),
		"fixext1 no data":     mustHex("d4 01"),
		"str32 short length":  mustHex("db 0000"),
		"array32 short len":   mustHex("dd 00"),
		"float64 truncated":   mustHex("cb 0000"),
		"uint16 truncated":    mustHex("cd 00"),
		"int64 truncated":     mustHex("d3 00000000"),
		"never used 0xc1":     {0xc1},
		"0xc1 inside array":   mustHex("92 01 c1"),
		"trailing byte":       mustHex("01 02"),
		"trailing after map":  mustHex("80 80"),
		"two values in array": mustHex("91 01 02"),
		"empty":               {},
		"truncated nesting":   mustHex("92 92 01"),
		"nested arrays bomb":  bytes.Repeat([]byte{0x91}, big),
		"nested array32 bomb": bytes.Repeat(mustHex("dd 00000001"), big/5),
		"nested maps bomb":    bytes.Repeat(mustHex("81 a161"), big/3),
		"nested map keys":     bytes.Repeat([]byte{0x81}, big),
		"nested map32 bomb":   bytes.Repeat(mustHex("df 00000001 c0"), big/6),
		"depth 101 arrays":    nested([]byte{0x91}, maxMsgPackDepth+1, 0x01),
		"depth 101 maps":      nested(mustHex("81 a161"), maxMsgPackDepth+1, 0x01),
		"depth 101 empty":     nested([]byte{0x91}, maxMsgPackDepth, 0x90),
		"bombs in a map":      mustHex("82 a161 dd0fffffff a162 01"),
		"wide then bomb":      append(mustHex("dc 0003 01 02"), mustHex("dd 0f ffffff")...),
		"garbage test input":  {0xc1, 0xff, 0x00, '{'},
	}
}

func TestCheckMsgPackRefusesHostile(t *testing.T) {
	for name, data := range hostile() {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := checkMsgPack(data)
			runtime.ReadMemStats(&after)
			require.ErrorIs(t, err, ErrMalformed)
			assert.Contains(t, err.Error(), "offset")
			assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10),
				"checkMsgPack allocated too much refusing %s", name)
		})
	}
}

func TestCheckMsgPackErrorMessages(t *testing.T) {
	for data, want := range map[string]string{
		"dd 0fffffff":       "array of 268435455 elements exceeds the 0 bytes left at offset 0",
		"92 01 df ffffffff": "map of 4294967295 entries exceeds the 0 bytes left at offset 2",
		"91 db 00000010 61": "str length 16 exceeds the 1 bytes left at offset 1",
		"c9 00000010 05":    "ext length 17 exceeds the 1 bytes left at offset 0",
		"c1":                "never-used type byte 0xc1 at offset 0",
		"01 02 03":          "2 trailing byte(s) after the value at offset 1",
		"92 91 01":          "truncated body: 1 more value(s) expected at offset 3",
		"cb 00":             "truncated value (type byte 0xcb) at offset 0",
		"dc 00":             "truncated array length (type byte 0xdc) at offset 0",
		"":                  "empty body at offset 0",
	} {
		err := checkMsgPack(mustHex(data))
		if assert.ErrorIs(t, err, ErrMalformed, data) {
			assert.Equal(t, "codec: malformed body: msgpack: "+want, err.Error(), data)
		}
	}
	err := checkMsgPack(nested([]byte{0x91}, maxMsgPackDepth+1, 0x01))
	assert.EqualError(t, err, "codec: malformed body: msgpack: array nested deeper than 100 levels at offset 100")
}

func TestMsgPackUnmarshalRefusesBombs(t *testing.T) {
	for name, data := range hostile() {
		t.Run(name, func(t *testing.T) {
			var ints []int
			assert.ErrorIs(t, MsgPack.Unmarshal(data, &ints), ErrMalformed)
			var m map[string]any
			assert.ErrorIs(t, MsgPack.Unmarshal(data, &m), ErrMalformed)
			var a any
			assert.ErrorIs(t, MsgPack.Unmarshal(data, &a), ErrMalformed)
			var o outer
			assert.ErrorIs(t, MsgPack.Unmarshal(data, &o), ErrMalformed)
			assert.NoError(t, MsgPack.Unmarshal(data, nil), "a nil target discards the body unchecked")
		})
	}
}

func TestMsgPackUnmarshalRecoversDecoderPanic(t *testing.T) {
	// A well-formed body whose map key is an array: msgpack/v5 panics with
	// "hash of unhashable type" decoding it into a map[any]any.
	data := mustHex("81 92 01 02 c3")
	require.NoError(t, checkMsgPack(data))
	var m map[any]any
	err := MsgPack.Unmarshal(data, &m)
	require.ErrorIs(t, err, ErrMalformed)
	assert.Contains(t, err.Error(), "unhashable")
}

func TestCheckMsgPackDoesNotAllocate(t *testing.T) {
	data, err := msgpack.Marshal(fullOuter())
	require.NoError(t, err)
	deep, err := msgpack.Marshal(deepArray(maxMsgPackDepth))
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		if checkMsgPack(data) != nil || checkMsgPack(deep) != nil {
			panic("valid body refused")
		}
	})
	assert.Zero(t, allocs)
}

func BenchmarkCheckMsgPack(b *testing.B) {
	data, err := msgpack.Marshal([]outer{fullOuter(), fullOuter()})
	require.NoError(b, err)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if err := checkMsgPack(data); err != nil {
			b.Fatal(err)
		}
	}
}
