package codec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

type (
	fieldsX     struct{ X, Y int }
	fieldsZ     struct{ X, Z int }
	fieldsLower struct{ L int }
	fieldsPtr   struct{ P int }

	fieldsConflict struct { // X: in both embedded structs at the same depth
		fieldsX
		fieldsZ
		W int
	}
	fieldsShallow struct { // X: the shallower field wins
		fieldsX
		X string
	}
	fieldsTagWins struct { // X: both at depth 1; json: the tagged one wins
		fieldsX
		Inner struct {
			X int `json:"X"`
		}
	}
	fieldsEmbedPtr struct {
		*fieldsPtr
		V string `msgpack:"v,omitempty" json:"v,omitempty"`
	}
	fieldsNoInline struct {
		fieldsX `msgpack:",noinline"`
		Q       int
	}
	fieldsInline struct {
		X       int
		fieldsZ `msgpack:",inline"`
	}
	fieldsTags struct {
		Total  int    `msgpack:"total,alias:sum" json:"total"`
		Skip   int    `msgpack:"-" json:"-"`
		Dash   int    `json:"-,"`
		Bad    int    `json:"a\"b"`
		Alias  string `msgpack:"alias:x"`
		Named  int    `msgpack:" spaced ,omitempty"`
		Kelvin int    `json:"k"`
	}
	fieldsUnexported struct {
		a int
		fieldsLower
	}
	fieldsTagged struct {
		fieldsX `json:"nested" msgpack:"nested"`
	}
)

// The keys the shape checks match with fields are the keys the libraries
// decode into fields: decoding {key: nil} with unknown fields disallowed
// fails exactly for the keys the checks find no field for.
func TestShapeFieldsMatchLibraries(t *testing.T) {
	keys := []string{
		"X", "Y", "Z", "W", "x", "y", "P", "p", "L", "l", "V", "v", "Q", "q", "a", "A",
		"fieldsX", "fieldsZ", "fieldsPtr", "fieldsLower", "FieldsX", "Inner",
		"total", "Total", "TOTAL", "sum", "Skip", "skip", "-", "Dash", "Bad", `a"b`, "Alias", "alias", "x",
		"spaced", " spaced ", "Named", "Kelvin", "k", "K", "\u212a", "nested", "Nested", "", "nope",
	}
	for _, v := range []any{
		fieldsConflict{}, fieldsShallow{}, fieldsTagWins{}, fieldsEmbedPtr{}, fieldsNoInline{},
		fieldsInline{}, fieldsTags{}, fieldsUnexported{}, fieldsTagged{},
	} {
		typ := reflect.TypeOf(v)
		mp := msgpackShapes.build(typ, map[reflect.Type]*shape{})
		js := jsonShapes.build(typ, map[reflect.Type]*shape{})
		require.NotNil(t, mp, typ)
		require.NotNil(t, js, typ)
		for _, key := range keys {
			body, err := msgpack.Marshal(map[string]any{key: nil})
			require.NoError(t, err)
			err = decodeKnownFields(body, reflect.New(typ).Interface())
			libMatches := !strings.Contains(fmt.Sprint(err), "unknown field")
			_, ok := mp.field([]byte(key))
			assert.Equal(t, libMatches, ok, "msgpack: %s, key %q", typ, key)

			body, err = json.Marshal(map[string]any{key: nil})
			require.NoError(t, err)
			jdec := json.NewDecoder(bytes.NewReader(body))
			jdec.DisallowUnknownFields()
			err = jdec.Decode(reflect.New(typ).Interface())
			libMatches = !strings.HasPrefix(fmt.Sprint(err), "json: unknown field")
			w := jsonWalk{data: body}
			k, _ := w.key(1)
			_, ok = js.jsonField(k)
			assert.Equal(t, libMatches, ok, "json: %s, key %q (body %s)", typ, key, body)
		}
	}
}

// decodeKnownFields decodes body into v with msgpack/v5, refusing keys
// that select no field. A panic (msgpack/v5 cannot set an unexported
// embedded struct by its name) is returned as an error too.
func decodeKnownFields(body []byte, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	dec := msgpack.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields(true)
	return dec.Decode(v)
}

// BenchmarkShapeCheck is what the shape checks add to decoding small
// struct args.
func BenchmarkShapeCheck(b *testing.B) {
	type pair struct{ A, B int }
	for _, bc := range []struct {
		name  string
		c     Codec
		check func([]byte, any) error
	}{
		{"msgpack", MsgPack, checkMsgPackShape},
		{"json", JSON, checkJSONShape},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data, err := bc.c.Marshal(pair{A: 3, B: 4})
			require.NoError(b, err)
			out := new(pair)
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.check(data, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
