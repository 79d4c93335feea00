package codec

import (
	"encoding"
	"reflect"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// msgpackShapes are msgpack/v5's rules, for its default decoder (the one
// msgpack.Unmarshal uses: `msgpack` struct tags only).
var msgpackShapes = &shapeRules{
	codec:   "msgpack",
	mapWord: "map",
	nilWord: "nil",
	custom:  msgpackCustom,
	fields:  msgpackFields,
}

var msgpackDecoders = []reflect.Type{
	reflect.TypeFor[msgpack.CustomDecoder](),
	reflect.TypeFor[msgpack.Unmarshaler](),
	reflect.TypeFor[encoding.BinaryUnmarshaler](),
	reflect.TypeFor[encoding.TextUnmarshaler](),
}

var msgpackEncoders = []reflect.Type{
	reflect.TypeFor[msgpack.CustomEncoder](),
	reflect.TypeFor[msgpack.Marshaler](),
	reflect.TypeFor[encoding.BinaryMarshaler](),
	reflect.TypeFor[encoding.TextMarshaler](),
}

// msgpackCustom reports whether msgpack/v5 hands values of t to their own
// decoding method. It cannot see decoders given with msgpack.Register.
func msgpackCustom(t reflect.Type) bool {
	return implementsAny(t, msgpackDecoders...)
}

// checkMsgPackShape checks data, a body that checkMsgPack accepted and
// msgpack.Unmarshal decoded into v without error, against the rules in the
// package documentation.
func checkMsgPackShape(data []byte, v any) error {
	tg := msgpackShapes.target(v)
	if data[0] == 0xc0 { // nil
		if !tg.nilOK {
			return msgpackShapes.nilError(tg.elem)
		}
		return nil
	}
	if tg.shape == nil {
		return nil
	}
	_, err := walkMsgPack(data, 0, tg.shape, 0)
	return err
}

// msgpackOffset is off as errorf takes it: -1 for the whole body.
func msgpackOffset(off int) int {
	if off == 0 {
		return -1
	}
	return off
}

// walkMsgPack checks the value at data[pos] against s and returns the
// offset after it. It recurses once per level of nesting of data, which
// checkMsgPack bounds.
func walkMsgPack(data []byte, pos int, s *shape, depth int) (int, error) {
	if s == nil || depth > maxShapeDepth {
		return skipMsgPack(data, pos, 1), nil
	}
	kind, n, next := msgpackHead(data, pos)
	var err error
	switch {
	case s.kind == shapeStruct && kind == mpMap:
		return walkMsgPackStruct(data, pos, s, n, next, depth)
	case s.kind == shapeStruct && kind == mpArray:
		if !s.asArray {
			return 0, msgpackShapes.arrayError(msgpackOffset(pos), s.typ)
		}
		if n == len(s.list) { // else empty: the decoder refuses other lengths
			for _, f := range s.list {
				if next, err = walkMsgPack(data, next, f, depth+1); err != nil {
					return 0, err
				}
			}
			return next, nil
		}
	case s.kind == shapeElems && kind == mpArray:
		for range n {
			if next, err = walkMsgPack(data, next, s.elem, depth+1); err != nil {
				return 0, err
			}
		}
		return next, nil
	case s.kind == shapeValues && kind == mpMap:
		for range n {
			next = skipMsgPack(data, next, 1)
			if next, err = walkMsgPack(data, next, s.elem, depth+1); err != nil {
				return 0, err
			}
		}
		return next, nil
	}
	return skipMsgPack(data, pos, 1), nil
}

// walkMsgPackStruct checks the map of n entries at data[pos], whose
// entries start at next, against struct shape s.
func walkMsgPackStruct(data []byte, pos int, s *shape, n, next, depth int) (int, error) {
	if n == 0 || s.nfields == 0 {
		return skipMsgPack(data, pos, 1), nil
	}
	entries := next
	matched := false
	for i := range n {
		key, p := msgpackKey(data, next)
		f, ok := s.field(key)
		if !ok {
			next = skipMsgPack(data, p, 1)
			continue
		}
		if s.leaf { // nothing left to check
			return skipMsgPack(data, p, 1+2*(n-i-1)), nil
		}
		matched = true
		var err error
		if next, err = walkMsgPack(data, p, f, depth+1); err != nil {
			return 0, err
		}
	}
	if !matched {
		var shown [][]byte
		for range min(n, maxShownKeys) {
			var key []byte
			key, entries = msgpackKey(data, entries)
			shown = append(shown, key)
			entries = skipMsgPack(data, entries, 1)
		}
		return 0, msgpackShapes.noFieldError(msgpackOffset(pos), s.typ, shown, n)
	}
	return next, nil
}

// msgpackKey returns the map key at data[pos] as msgpack/v5 reads it into
// a struct field name, and the offset after it.
func msgpackKey(data []byte, pos int) (key []byte, next int) {
	if c := data[pos]; c >= 0xa0 && c <= 0xbf { // fixstr, the usual key
		next = pos + 1 + int(c&0x1f)
		return data[pos+1 : next], next
	}
	kind, n, next := msgpackHead(data, pos)
	switch kind {
	case mpStr:
		return data[next : next+n], next + n
	case mpNil: // read as ""
		return nil, next
	}
	return nil, skipMsgPack(data, pos, 1) // which the decoder refuses
}

// Kinds of msgpack values, as msgpackHead tells them apart.
const (
	mpOther = iota
	mpNil
	mpStr // str or bin
	mpArray
	mpMap
	mpExt // next is after its data
)

// msgpackHead reads the header of the value at data[pos], in a body that
// checkMsgPack accepted. It returns the kind of the value, n (the length
// of a str or bin, the elements of an array, the entries of a map) and the
// offset after the header, which for other kinds is after the whole value.
func msgpackHead(data []byte, pos int) (kind, n, next int) {
	c := data[pos]
	switch {
	case c <= 0x7f, c >= 0xe0: // fixint
		return mpOther, 0, pos + 1
	case c <= 0x8f:
		return mpMap, int(c & 0x0f), pos + 1
	case c <= 0x9f:
		return mpArray, int(c & 0x0f), pos + 1
	case c <= 0xbf:
		return mpStr, int(c & 0x1f), pos + 1
	}
	// size returns the big-endian length of k bytes after c.
	size := func(k int) int {
		n := 0
		for _, b := range data[pos+1 : pos+1+k] {
			n = n<<8 | int(b)
		}
		return n
	}
	switch c {
	case 0xc0:
		return mpNil, 0, pos + 1
	case 0xc4, 0xc5, 0xc6: // bin 8/16/32
		k := 1 << (c - 0xc4)
		return mpStr, size(k), pos + 1 + k
	case 0xc7, 0xc8, 0xc9: // ext 8/16/32: length, type byte, data
		k := 1 << (c - 0xc7)
		return mpExt, 0, pos + 1 + k + 1 + size(k)
	case 0xca: // float32
		return mpOther, 0, pos + 5
	case 0xcb: // float64
		return mpOther, 0, pos + 9
	case 0xcc, 0xcd, 0xce, 0xcf: // uint 8/16/32/64
		return mpOther, 0, pos + 1 + 1<<(c-0xcc)
	case 0xd0, 0xd1, 0xd2, 0xd3: // int 8/16/32/64
		return mpOther, 0, pos + 1 + 1<<(c-0xd0)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1/2/4/8/16: type byte, data
		return mpExt, 0, pos + 2 + 1<<(c-0xd4)
	case 0xd9, 0xda, 0xdb: // str 8/16/32
		k := 1 << (c - 0xd9)
		return mpStr, size(k), pos + 1 + k
	case 0xdc, 0xdd: // array 16/32
		k := 2 << (c - 0xdc)
		return mpArray, size(k), pos + 1 + k
	case 0xde, 0xdf: // map 16/32
		k := 2 << (c - 0xde)
		return mpMap, size(k), pos + 1 + k
	}
	return mpOther, 0, pos + 1 // false, true
}

// skipMsgPack returns the offset after the n values at data[pos], in a
// body that checkMsgPack accepted.
func skipMsgPack(data []byte, pos, n int) int {
	for pending := n; pending > 0; pending-- {
		switch c := data[pos]; {
		case c <= 0x7f, c >= 0xe0, c == 0xc0, c == 0xc2, c == 0xc3: // fixint, nil, false, true
			pos++
			continue
		case c >= 0xa0 && c <= 0xbf: // fixstr
			pos += 1 + int(c&0x1f)
			continue
		}
		kind, n, next := msgpackHead(data, pos)
		switch kind {
		case mpStr:
			next += n
		case mpArray:
			pending += n
		case mpMap:
			pending += 2 * n
		}
		pos = next
	}
	return pos
}

// maxInline bounds how deep msgpackFields follows embedded structs.
const maxInline = 32

// msgpackFields returns the keys that msgpack/v5 matches with fields of
// struct t.
func msgpackFields(t reflect.Type) structFields {
	fs := msgpackFieldsOf(t, 0)
	sf := structFields{asArray: fs.asArray}
	for name, f := range fs.byName {
		sf.names = append(sf.names, namedField{name, f.typ})
	}
	for _, f := range fs.list {
		sf.list = append(sf.list, f.typ)
	}
	return sf
}

// msgpackFieldSet mirrors msgpack/v5's fields: byName is what its decoder
// looks keys up in, list the fields in array order.
type msgpackFieldSet struct {
	byName  map[string]msgpackField
	list    []msgpackField
	asArray bool
}

// msgpackField is a field of a struct as msgpack/v5 decodes it.
type msgpackField struct {
	name  string // in list: the key that selects it
	typ   reflect.Type
	index []int // the path to it, as for reflect.Value.FieldByIndex
}

// msgpackFieldsOf follows msgpack/v5's getFields (types.go, v5.4.1):
// exported fields and embedded ones, named by their `msgpack` tag or Go
// name, none for tag "-". The fields of an embedded struct (or pointer to
// one) are inlined, unless tagged noinline, or it encodes or decodes
// itself, or one of its names is taken already (tagged inline: all but
// those names); its own name then also selects the whole struct. The
// alias option adds a name. A field named _msgpack tagged as_array (or
// asArray) declares the struct array-encoded.
func msgpackFieldsOf(t reflect.Type, depth int) msgpackFieldSet {
	fs := msgpackFieldSet{byName: make(map[string]msgpackField, t.NumField())}
	add := func(f msgpackField) {
		fs.byName[f.name] = f
		fs.list = append(fs.list, f)
	}
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts := parseMsgpackTag(f.Tag.Get("msgpack"))
		if name == "-" {
			continue
		}
		if f.Name == "_msgpack" {
			fs.asArray = hasMsgpackOption(opts, "as_array") || hasMsgpackOption(opts, "asArray")
		}
		if !f.IsExported() && !f.Anonymous {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if f.Anonymous && !hasMsgpackOption(opts, "noinline") && depth < maxInline {
			embedded := f.Type
			for embedded.Kind() == reflect.Pointer {
				embedded = embedded.Elem()
			}
			inline := false
			if embedded.Kind() == reflect.Struct {
				inner := msgpackFieldsOf(embedded, depth+1).list
				for j := range inner {
					inner[j].index = append([]int{i}, inner[j].index...)
				}
				if hasMsgpackOption(opts, "inline") {
					inline = true
					for _, g := range inner {
						if _, taken := fs.byName[g.name]; !taken {
							add(g)
						}
					}
				} else if !implementsAny(embedded, msgpackEncoders...) && !msgpackCustom(embedded) && !anyTaken(fs.byName, inner) {
					inline = true
					for _, g := range inner {
						add(g)
					}
				}
			}
			if inline {
				fs.byName[name] = msgpackField{name, f.Type, f.Index}
				continue
			}
		}
		field := msgpackField{name, f.Type, f.Index}
		add(field)
		if alias, ok := msgpackOption(opts, "alias"); ok {
			fs.byName[alias] = field
		}
	}
	return fs
}

// anyTaken reports whether one of fields has a name in byName.
func anyTaken(byName map[string]msgpackField, fields []msgpackField) bool {
	for _, f := range fields {
		if _, ok := byName[f.name]; ok {
			return true
		}
	}
	return false
}

// parseMsgpackTag splits a `msgpack` tag into the field name and the
// options, as github.com/vmihailenco/tagparser does for the forms
// msgpack/v5 documents ("name", "name,omitempty", ",inline",
// "name,alias:other"): a first element with a colon is an option.
func parseMsgpackTag(tag string) (name, opts string) {
	name, opts, _ = strings.Cut(tag, ",")
	if strings.Contains(name, ":") {
		return "", tag
	}
	return strings.TrimSpace(name), opts
}

// msgpackOption returns the value of option key in opts, the options of a
// `msgpack` tag, and whether it is there.
func msgpackOption(opts, key string) (string, bool) {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		k, v, _ := strings.Cut(o, ":")
		if strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

func hasMsgpackOption(opts, key string) bool {
	_, ok := msgpackOption(opts, key)
	return ok
}
