package codec

import (
	"bytes"
	"cmp"
	"encoding"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// jsonShapes are encoding/json's rules.
var jsonShapes = &shapeRules{
	codec:   "json",
	mapWord: "object",
	nilWord: "null",
	fold:    true,
	custom:  jsonCustom,
	fields:  jsonFields,
}

var jsonDecoders = []reflect.Type{
	reflect.TypeFor[json.Unmarshaler](),
	reflect.TypeFor[encoding.TextUnmarshaler](),
}

// jsonCustom reports whether encoding/json hands values of t to their own
// decoding method.
func jsonCustom(t reflect.Type) bool {
	return implementsAny(t, jsonDecoders...)
}

// checkJSONShape checks data, a body that json.Unmarshal decoded into v
// without error (so valid JSON), against the rules in the package
// documentation.
func checkJSONShape(data []byte, v any) error {
	tg := jsonShapes.target(v)
	w := jsonWalk{data: data}
	w.start = w.space(0)
	if data[w.start] == 'n' { // null
		if !tg.nilOK {
			return jsonShapes.nilError(tg.elem)
		}
		return nil
	}
	if tg.shape == nil {
		return nil
	}
	_, err := w.value(w.start, tg.shape, 0)
	return err
}

// jsonWalk walks a valid JSON body.
type jsonWalk struct {
	data  []byte
	start int // where the body's value starts
}

// off is pos as errorf takes it: -1 for the whole body.
func (w *jsonWalk) off(pos int) int {
	if pos == w.start {
		return -1
	}
	return pos
}

// value checks the value at data[pos] against s and returns the offset
// after it. It recurses once per level of nesting of data, up to
// maxShapeDepth.
func (w *jsonWalk) value(pos int, s *shape, depth int) (int, error) {
	if s == nil || depth > maxShapeDepth {
		return w.skip(pos), nil
	}
	c := w.data[pos]
	switch {
	case s.kind == shapeStruct && c == '{':
		return w.object(pos, s, depth)
	case s.kind == shapeStruct && c == '[': // encoding/json refuses it first
		return 0, jsonShapes.arrayError(w.off(pos), s.typ)
	case s.kind == shapeElems && c == '[':
		p := w.space(pos + 1)
		if w.data[p] == ']' {
			return p + 1, nil
		}
		for {
			var err error
			if p, err = w.value(p, s.elem, depth+1); err != nil {
				return 0, err
			}
			if p = w.space(p); w.data[p] == ']' {
				return p + 1, nil
			}
			p = w.space(p + 1) // after the comma
		}
	case s.kind == shapeValues && c == '{':
		p := w.space(pos + 1)
		if w.data[p] == '}' {
			return p + 1, nil
		}
		for {
			_, p = w.key(p)
			var err error
			if p, err = w.value(p, s.elem, depth+1); err != nil {
				return 0, err
			}
			if p = w.space(p); w.data[p] == '}' {
				return p + 1, nil
			}
			p = w.space(p + 1)
		}
	}
	return w.skip(pos), nil
}

// object checks the object at data[pos] against struct shape s.
func (w *jsonWalk) object(pos int, s *shape, depth int) (int, error) {
	p := w.space(pos + 1)
	if w.data[p] == '}' || s.nfields == 0 {
		return w.skip(pos), nil
	}
	members := p
	n := 0
	matched := false
	for {
		var key jsonKey
		key, p = w.key(p)
		if f, ok := s.jsonField(key); ok {
			if s.leaf { // nothing left to check
				return w.scan(p, 1), nil
			}
			matched = true
			var err error
			if p, err = w.value(p, f, depth+1); err != nil {
				return 0, err
			}
		} else {
			p = w.skip(p)
		}
		n++
		if p = w.space(p); w.data[p] == '}' {
			break
		}
		p = w.space(p + 1)
	}
	if !matched {
		var shown [][]byte
		for range min(n, maxShownKeys) {
			var key jsonKey
			key, members = w.key(members)
			shown = append(shown, key.raw)
			members = w.space(w.space(w.skip(members)) + 1) // after the comma
		}
		return 0, jsonShapes.noFieldError(w.off(pos), s.typ, shown, n)
	}
	return p + 1, nil
}

// A jsonKey is an object key: quoted as in the body, raw between the
// quotes, plain if all ASCII without escapes.
type jsonKey struct {
	quoted, raw []byte
	plain       bool
}

// key reads the key at data[pos] and returns it with the offset of the
// value after it.
func (w *jsonWalk) key(pos int) (jsonKey, int) {
	end, plain := w.str(pos)
	k := jsonKey{quoted: w.data[pos:end], raw: w.data[pos+1 : end-1], plain: plain}
	return k, w.space(w.space(end) + 1) // after the colon
}

// jsonField returns the shape of the field of s that encoding/json
// decodes key into, whether the key matches exactly or case-insensitively.
func (s *shape) jsonField(key jsonKey) (*shape, bool) {
	raw := key.raw
	if !key.plain && (bytes.IndexByte(raw, '\\') >= 0 || !utf8.Valid(raw)) {
		var k string
		if json.Unmarshal(key.quoted, &k) == nil {
			raw = []byte(k)
		}
	}
	if f, ok := s.field(raw); ok {
		return f, true
	}
	f, ok := s.folded[string(foldName(raw))]
	return f, ok
}

// space returns the offset of the first byte at or after pos that is not
// JSON white space.
func (w *jsonWalk) space(pos int) int {
	for pos < len(w.data) {
		switch w.data[pos] {
		case ' ', '\t', '\n', '\r':
			pos++
		default:
			return pos
		}
	}
	return pos
}

// str returns the offset after the string at data[pos], and whether it is
// all ASCII without escapes.
func (w *jsonWalk) str(pos int) (next int, plain bool) {
	plain = true
	for i := pos + 1; ; i++ {
		switch c := w.data[i]; {
		case c == '"':
			return i + 1, plain
		case c == '\\':
			plain = false
			i++
		case c >= utf8.RuneSelf:
			plain = false
		}
	}
}

// skip returns the offset after the value at data[pos].
func (w *jsonWalk) skip(pos int) int { return w.scan(pos, 0) }

// scan returns the offset after the value at data[pos] if depth is 0, or
// else after the end of the depth containers that pos is in.
func (w *jsonWalk) scan(pos, depth int) int {
	for {
		switch w.data[pos] {
		case '"':
			pos, _ = w.str(pos)
		case '{', '[':
			depth++
			pos++
		case '}', ']':
			depth--
			pos++
		default:
			if depth == 0 { // a number or a literal
				for pos < len(w.data) {
					switch w.data[pos] {
					case ',', '}', ']', ' ', '\t', '\n', '\r':
						return pos
					}
					pos++
				}
				return pos
			}
			pos++
		}
		if depth == 0 {
			return pos
		}
	}
}

// jsonFields returns the keys that encoding/json matches with fields of
// struct t, following its typeFields (encode.go, Go 1.26): exported
// fields, and those of embedded structs, named by their `json` tag or Go
// name, none for tag "-"; of the fields with one name, the shallowest
// wins, then a tagged one; two left at the same depth cancel out. The
// names come in field order.
func jsonFields(t reflect.Type) structFields {
	var sf structFields
	for _, f := range dominantJSONFields(collectJSONFields(t)) {
		sf.names = append(sf.names, namedField{f.name, f.typ})
	}
	return sf
}

// jsonField is a field of a struct as encoding/json sees it, embedded
// structs' fields included.
type jsonField struct {
	name   string
	tagged bool
	index  []int
	typ    reflect.Type
}

// collectJSONFields lists t's fields and those of its embedded structs,
// breadth first, as encoding/json's typeFields does; a field name that
// occurs twice at one depth is listed twice, so that both cancel out.
func collectJSONFields(t reflect.Type) []jsonField {
	var fields []jsonField
	current, next := []jsonField{}, []jsonField{{typ: t}}
	var count, nextCount map[reflect.Type]int
	visited := map[reflect.Type]bool{}
	for len(next) > 0 {
		current, next = next, current[:0]
		count, nextCount = nextCount, map[reflect.Type]int{}
		for _, f := range current {
			if visited[f.typ] {
				continue
			}
			visited[f.typ] = true
			for i := range f.typ.NumField() {
				sf := f.typ.Field(i)
				ft := sf.Type
				if ft.Name() == "" && ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if sf.Anonymous {
					if !sf.IsExported() && ft.Kind() != reflect.Struct {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if !isValidJSONTag(name) {
					name = ""
				}
				index := append(slices.Clip(f.index), i)
				if name != "" || !sf.Anonymous || ft.Kind() != reflect.Struct {
					tagged := name != ""
					if name == "" {
						name = sf.Name
					}
					fields = append(fields, jsonField{name, tagged, index, sf.Type})
					if count[f.typ] > 1 { // a duplicate, so that both cancel out
						fields = append(fields, fields[len(fields)-1])
					}
					continue
				}
				nextCount[ft]++
				if nextCount[ft] == 1 {
					next = append(next, jsonField{name: ft.Name(), index: index, typ: ft})
				}
			}
		}
	}
	return fields
}

// dominantJSONFields keeps, of the fields sharing a name, the one
// encoding/json uses (the shallowest, then the tagged one; none if that
// leaves a tie), in the order of the struct.
func dominantJSONFields(fields []jsonField) []jsonField {
	slices.SortFunc(fields, func(a, b jsonField) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		if c := cmp.Compare(len(a.index), len(b.index)); c != 0 {
			return c
		}
		if a.tagged != b.tagged {
			if a.tagged {
				return -1
			}
			return +1
		}
		return slices.Compare(a.index, b.index)
	})
	out := fields[:0]
	for i := 0; i < len(fields); {
		j := i + 1
		for j < len(fields) && fields[j].name == fields[i].name {
			j++
		}
		if j-i == 1 || len(fields[i].index) != len(fields[i+1].index) || fields[i].tagged != fields[i+1].tagged {
			out = append(out, fields[i])
		}
		i = j
	}
	slices.SortFunc(out, func(a, b jsonField) int { return slices.Compare(a.index, b.index) })
	return out
}

// isValidJSONTag is encoding/json's isValidTag.
func isValidJSONTag(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}

// foldName is encoding/json's foldName: foldName(x) == foldName(y) if and
// only if bytes.EqualFold(x, y). It is small enough to be inlined, so that
// its buffer stays on the caller's stack.
func foldName(in []byte) []byte {
	var arr [32]byte // large enough for most names
	return appendFoldedName(arr[:0], in)
}

func appendFoldedName(out, in []byte) []byte {
	for i := 0; i < len(in); {
		if c := in[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			out = append(out, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(in[i:])
		out = utf8.AppendRune(out, foldRune(r))
		i += n
	}
	return out
}

// foldRune returns the smallest rune of r's fold set.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}
