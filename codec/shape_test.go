package codec_test

import (
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/amqprpc/amqprpc/codec"
)

// Args and Reply have no field in common.
type Args struct{ A, B int }

type Reply struct{ C int }

// pyRequest is the request body of a Python RPC library.
type pyRequest struct {
	Func   string         `msgpack:"func" json:"func"`
	Args   []int          `msgpack:"args" json:"args"`
	Kwargs map[string]int `msgpack:"kwargs" json:"kwargs"`
}

type inner struct{ N int }

type nested struct {
	Name  string
	In    inner
	Ptr   *inner
	List  []inner
	ByKey map[string]inner
	Any   any
}

type Base struct{ ID int }

type embeds struct {
	Base
	Extra string
}

type tagged struct {
	Total int `msgpack:"total,alias:sum" json:"total"`
	Skip  int `msgpack:"-" json:"-"`
}

// pair is array-encoded by msgpack.
type pair struct {
	_msgpack struct{} `msgpack:",as_array"`
	A, B     int
}

// custom decodes any body itself, by ignoring it.
type custom struct{}

func (*custom) DecodeMsgpack(d *msgpack.Decoder) error { return d.Skip() }

func (*custom) UnmarshalJSON([]byte) error { return nil }

type withCustom struct{ C custom }

// raw is a body written out per codec, for what one cannot encode.
type raw struct{ msgpack, json string }

// Outcomes of decoding a body.
const (
	accepted = iota
	shapeErr // refused with ErrShape
	refused  // refused by the library itself
)

type shapeCase struct {
	name     string
	body     any // encoded with the codec under test, unless a raw
	into     func() any
	msgpack  int // the outcome with MsgPack
	json     int // and with JSON
	contains string
}

func shapeCases() []shapeCase {
	nilBody := raw{"c0", "null"}
	return []shapeCase{
		{name: "same type", body: Args{A: 3, B: 4}, into: newOf[Args]},
		{name: "struct of another type", body: Reply{C: 7}, into: newOf[Args], msgpack: shapeErr, json: shapeErr,
			contains: `with key "C" shares no field with codec_test.Args`},
		{name: "python request", body: pyRequest{Func: "Arith.Add", Args: []int{1, 2}, Kwargs: map[string]int{}}, into: newOf[Args],
			msgpack: shapeErr, json: shapeErr, contains: `with keys "func", "args", "kwargs" shares no field with codec_test.Args`},
		{name: "many unknown keys", body: map[string]int{"a1": 1, "a2": 2, "a3": 3, "a4": 4, "a5": 5, "a6": 6}, into: newOf[Reply],
			msgpack: shapeErr, json: shapeErr, contains: "and 2 more shares no field with codec_test.Reply"},
		{name: "array into struct", body: []int{7, 8}, into: newOf[Args], msgpack: shapeErr, json: refused,
			contains: "array where a map is expected for struct codec_test.Args"},
		{name: "empty array into struct", body: []int{}, into: newOf[Args], msgpack: shapeErr, json: refused},
		{name: "array into as_array struct", body: []int{7, 8}, into: newOf[pair], json: refused},
		{name: "as_array struct round trip", body: pair{A: 1, B: 2}, into: newOf[pair]},
		{name: "map into as_array struct", body: Args{A: 1}, into: newOf[pair]},
		{name: "other map into as_array struct", body: Reply{C: 1}, into: newOf[pair], msgpack: shapeErr, json: shapeErr},
		{name: "extra unknown keys", body: map[string]int{"A": 1, "Z": 2, "Y": 3}, into: newOf[Args]},
		{name: "empty map", body: map[string]int{}, into: newOf[Args]},
		{name: "any map into empty struct", body: pyRequest{Func: "f"}, into: newOf[struct{}]},
		{name: "array into empty struct", body: []int{}, into: newOf[struct{}], msgpack: shapeErr, json: refused},

		{name: "nil into int", body: nilBody, into: newOf[int], msgpack: shapeErr, json: shapeErr,
			contains: "where a value of type int is expected"},
		{name: "nil into struct", body: nilBody, into: newOf[Reply], msgpack: shapeErr, json: shapeErr,
			contains: "where a value of type codec_test.Reply is expected"},
		{name: "nil into string", body: nilBody, into: newOf[string], msgpack: shapeErr, json: shapeErr},
		{name: "nil into bool", body: nilBody, into: newOf[bool], msgpack: shapeErr, json: shapeErr},
		{name: "nil into float64", body: nilBody, into: newOf[float64], msgpack: shapeErr, json: shapeErr},
		{name: "nil into array", body: nilBody, into: newOf[[2]int], msgpack: shapeErr, json: shapeErr},
		{name: "null with spaces", body: raw{"c0", " \n null\t"}, into: newOf[int], msgpack: shapeErr, json: shapeErr},
		{name: "nil into pointer", body: nilBody, into: newOf[*Reply]},
		{name: "nil into slice", body: nilBody, into: newOf[[]int]},
		{name: "nil into bytes", body: nilBody, into: newOf[[]byte]},
		{name: "nil into map", body: nilBody, into: newOf[map[string]int]},
		{name: "nil into any", body: nilBody, into: newOf[any]},
		{name: "nil into custom", body: nilBody, into: newOf[custom]},
		{name: "nil into time", body: nilBody, into: newOf[time.Time], msgpack: refused},

		{name: "nested struct", body: nested{Name: "n", In: inner{N: 1}, Ptr: &inner{N: 2}, List: []inner{{N: 3}},
			ByKey: map[string]inner{"k": {N: 4}}}, into: newOf[nested]},
		{name: "nested struct of wrong shape", body: map[string]any{"Name": "n", "In": Reply{C: 1}}, into: newOf[nested],
			msgpack: shapeErr, json: shapeErr, contains: `with key "C" shares no field with codec_test.inner at offset`},
		{name: "nested array for a struct", body: map[string]any{"In": []int{1}}, into: newOf[nested],
			msgpack: shapeErr, json: refused, contains: "struct codec_test.inner at offset"},
		{name: "nested nil struct", body: map[string]any{"Name": "n", "In": nil, "Ptr": nil}, into: newOf[nested]},
		{name: "pointer field of wrong shape", body: map[string]any{"Ptr": Reply{C: 1}}, into: newOf[nested],
			msgpack: shapeErr, json: shapeErr},
		{name: "array element in a slice of structs", body: map[string]any{"List": []any{inner{N: 1}, []int{1}}}, into: newOf[nested],
			msgpack: shapeErr, json: refused},
		{name: "wrong element in a slice of structs", body: map[string]any{"List": []any{inner{N: 1}, Reply{C: 1}}}, into: newOf[nested],
			msgpack: shapeErr, json: shapeErr},
		{name: "nil element in a slice of structs", body: map[string]any{"List": []any{inner{N: 1}, nil}}, into: newOf[nested]},
		{name: "wrong value in a map of structs", body: map[string]any{"ByKey": map[string]any{"k": Reply{C: 1}}}, into: newOf[nested],
			msgpack: shapeErr, json: shapeErr},
		{name: "slice of structs", body: []Args{{A: 1}, {B: 2}}, into: newOf[[]Args]},
		{name: "slice of structs of wrong shape", body: []any{Args{A: 1}, Reply{C: 2}}, into: newOf[[]*Args],
			msgpack: shapeErr, json: shapeErr},
		{name: "anything in an interface field", body: map[string]any{"Name": "n", "Any": Reply{C: 1}}, into: newOf[nested]},
		{name: "anything into any", body: Reply{C: 1}, into: newOf[any]},
		{name: "anything into a map", body: Reply{C: 1}, into: newOf[map[string]any]},

		{name: "embedded struct round trip", body: embeds{Base: Base{ID: 1}, Extra: "x"}, into: newOf[embeds]},
		{name: "promoted field", body: map[string]int{"ID": 1}, into: newOf[embeds]},
		{name: "embedded struct by name", body: map[string]any{"Base": Base{ID: 1}}, into: newOf[embeds], json: shapeErr},
		{name: "embedded struct of wrong shape", body: map[string]any{"Base": Reply{C: 1}}, into: newOf[embeds],
			msgpack: shapeErr, json: shapeErr},
		{name: "tag-renamed field", body: map[string]int{"total": 1}, into: newOf[tagged]},
		{name: "Go name of a tag-renamed field", body: map[string]int{"Total": 1}, into: newOf[tagged], msgpack: shapeErr},
		{name: "msgpack alias", body: map[string]int{"sum": 1}, into: newOf[tagged], json: shapeErr},
		{name: "field tagged -", body: map[string]int{"Skip": 1}, into: newOf[tagged], msgpack: shapeErr, json: shapeErr},
		{name: "case-insensitive key", body: map[string]int{"a": 1}, into: newOf[Args], msgpack: shapeErr},
		{name: "escaped key", body: raw{"81 a141 01", `{"\u0041": 1}`}, into: newOf[Args]},
		{name: "custom decoder", body: Reply{C: 1}, into: newOf[custom]},
		{name: "custom decoder field", body: map[string]any{"C": []int{1}}, into: newOf[withCustom]},
		{name: "time field", body: struct{ When time.Time }{time.Unix(1700000000, 0)}, into: newOf[struct{ When time.Time }]},
	}
}

func newOf[T any]() any { return new(T) }

func TestUnmarshalShape(t *testing.T) {
	for _, c := range []codec.Codec{codec.MsgPack, codec.JSON} {
		for _, tc := range shapeCases() {
			t.Run(c.ContentType()+"/"+tc.name, func(t *testing.T) {
				var data []byte
				if r, ok := tc.body.(raw); ok {
					data = []byte(r.json)
					if c == codec.MsgPack {
						data = hexBody(t, r.msgpack)
					}
				} else {
					var err error
					data, err = c.Marshal(tc.body)
					require.NoError(t, err)
				}
				want, name := tc.json, "json"
				if c == codec.MsgPack {
					want, name = tc.msgpack, "msgpack"
				}
				err := c.Unmarshal(data, tc.into())
				switch want {
				case accepted:
					assert.NoError(t, err)
				case shapeErr:
					require.ErrorIs(t, err, codec.ErrShape)
					assert.Contains(t, err.Error(), "codec: wrong shape: "+name+": ")
					assert.Contains(t, err.Error(), tc.contains)
				case refused:
					require.Error(t, err)
					assert.NotErrorIs(t, err, codec.ErrShape)
				}
			})
		}
	}
}

func TestUnmarshalShapeErrorText(t *testing.T) {
	longKey := strings.Repeat("k", 40)
	for _, tc := range []struct {
		c    codec.Codec
		body string
		into any
		want string
	}{
		{codec.MsgPack, "83 a466756e63 a941726974682e416464 a461726773 920102 a66b7761726773 80", new(Args),
			`codec: wrong shape: msgpack: map with keys "func", "args", "kwargs" shares no field with codec_test.Args`},
		{codec.JSON, `{"func":"Arith.Add","args":[1,2],"kwargs":{}}`, new(Args),
			`codec: wrong shape: json: object with keys "func", "args", "kwargs" shares no field with codec_test.Args`},
		{codec.MsgPack, "92 07 08", new(Args),
			"codec: wrong shape: msgpack: array where a map is expected for struct codec_test.Args"},
		{codec.MsgPack, "91 92 07 08", new([]Args),
			"codec: wrong shape: msgpack: array where a map is expected for struct codec_test.Args at offset 1"},
		{codec.MsgPack, "c0", new(int), "codec: wrong shape: msgpack: nil where a value of type int is expected"},
		{codec.JSON, "null", new(int), "codec: wrong shape: json: null where a value of type int is expected"},
		{codec.JSON, ` [{"A":1},{"C":2}]`, new([]Args),
			`codec: wrong shape: json: object with key "C" shares no field with codec_test.Args at offset 10`},
		{codec.JSON, `{"` + longKey + `":1}`, new(Args),
			`codec: wrong shape: json: object with key "` + longKey[:32] + `"... shares no field with codec_test.Args`},
	} {
		body := []byte(tc.body)
		if tc.c == codec.MsgPack {
			body = hexBody(t, tc.body)
		}
		assert.EqualError(t, tc.c.Unmarshal(body, tc.into), tc.want)
	}
}

// A nil body sets a nillable target to nil, as the libraries do.
func TestUnmarshalNilIntoNillable(t *testing.T) {
	for _, c := range []codec.Codec{codec.MsgPack, codec.JSON} {
		data, err := c.Marshal([]int(nil))
		require.NoError(t, err)
		out := []int{1}
		require.NoError(t, c.Unmarshal(data, &out), c.ContentType())
		assert.Nil(t, out, c.ContentType())
		r := &Reply{C: 1}
		require.NoError(t, c.Unmarshal(data, &r), c.ContentType())
		assert.Nil(t, r, c.ContentType())
	}
}

// Whatever Go encodes decodes back into the same type: the checks refuse
// only what no Go peer of that type sends.
func TestUnmarshalShapeAcceptsRoundTrips(t *testing.T) {
	for _, c := range []codec.Codec{codec.MsgPack, codec.JSON} {
		for _, v := range []any{
			Args{}, &Reply{C: 1}, []Args{{A: 1}}, map[string]*Args{"x": {B: 2}, "y": nil}, [2]Reply{},
			nested{In: inner{N: 1}, List: []inner{{}}}, embeds{}, tagged{Total: 1}, pair{A: 1}, struct{}{},
			withCustom{}, []byte("x"), []int(nil), "", 0, false, time.Now(),
		} {
			data, err := c.Marshal(v)
			require.NoError(t, err)
			out := reflect.New(reflect.TypeOf(v))
			assert.NoError(t, c.Unmarshal(data, out.Interface()), "%s %T", c.ContentType(), v)
		}
	}
}

func hexBody(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}
