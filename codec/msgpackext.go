package codec

import (
	"fmt"
	"reflect"
	"sync"
)

// msgpack/v5 (v5.4.1) reads every Go map it decodes into through
// Decoder.DecodeMapLen, which takes an ext value for a map: it skips the
// ext's header, reads a map header from the ext's data and the entries
// from the bytes after it, past the end of the ext if the header says so.
// checkMsgPack takes ext data for opaque bytes, so nothing checked the
// counts read there (a map32 header of 4G entries in an 11-byte body ends
// the process with a fatal out of memory), nor anything the decoder reads
// after it, out of step with the body. That happens wherever a Go map is
// decoded: map[string]any, map[string]string and other map types, as the
// whole body, a struct field (also when a struct is filled from an array,
// or selected by an interned-string key), an element of a slice, array or
// map, a map key, or a map that a non-nil interface already holds, which
// msgpack/v5 decodes into. Structs, slices, arrays and strings read their
// headers without skipping an ext, and an interface reads an ext whole (a
// map in it is decoded only when its header says map).
//
// An ext where a Go map is decoded is not something msgpack/v5 encodes,
// so checkMsgPackExts refuses it, whatever its data. (Scanning the data
// for a map header cannot tell on its own: a time.Time's data often starts
// with one, 0x80-0x8f or 0xde/0xdf, and is harmless where a time.Time is
// decoded.) It finds those places before decoding, by walking the body
// with the type it is decoded into, and the value where msgpack/v5 decodes
// into what is there already, only for bodies that hold an ext.

// extKind says what msgpack/v5 does with a value of one Go type.
type extKind uint8

const (
	extMap    extKind = iota + 1 // reads it with DecodeMapLen, then keys and values
	extStruct                    // a map of fields by name, or an array of all fields in order
	extElems                     // a slice or array: each element
	extIface                     // an interface: decodes into the value it holds, if any
)

// An extNode is what checkMsgPackExts looks for in a value decoded into one
// Go type: nil if no map can be decoded there. Nodes of recursive types
// refer to themselves.
type extNode struct {
	kind extKind
	typ  reflect.Type // extMap: for the error
	key  *extNode     // extMap: keys
	elem *extNode     // extMap: values; extElems: elements

	// extStruct: fields holds the fields that have a node, by each key
	// that selects them; list all fields, in array order.
	fields map[string]extField
	list   []extField
}

// An extField is a field of a struct node.
type extField struct {
	node  *extNode
	index []int // as reflect.Value.FieldByIndex takes it
}

var ifaceNode = &extNode{kind: extIface}

// extNodes caches the *extNode of each type.
var extNodes sync.Map

// extNodeOf returns the node of type t.
func extNodeOf(t reflect.Type) *extNode {
	if n, ok := extNodes.Load(t); ok {
		return n.(*extNode)
	}
	n, _ := extNodes.LoadOrStore(t, buildExtNode(t, map[reflect.Type]*extNode{}))
	return n.(*extNode)
}

// buildExtNode returns the node of t. building holds the nodes built or
// being built, so that recursive types end.
func buildExtNode(t reflect.Type, building map[reflect.Type]*extNode) *extNode {
	for i := 0; t.Kind() == reflect.Pointer; i++ {
		if i == maxDeref {
			return nil
		}
		t = t.Elem()
	}
	if n, ok := building[t]; ok {
		return n
	}
	if msgpackCustom(t) { // so time.Time and types given to msgpack.RegisterExt
		return nil
	}
	switch t.Kind() {
	case reflect.Interface:
		return ifaceNode
	case reflect.Map:
		n := &extNode{kind: extMap, typ: t}
		building[t] = n
		n.key = buildExtNode(t.Key(), building)
		n.elem = buildExtNode(t.Elem(), building)
		return n
	case reflect.Slice, reflect.Array:
		n := &extNode{kind: extElems}
		building[t] = n
		if n.elem = buildExtNode(t.Elem(), building); n.elem == nil {
			building[t] = nil
			return nil
		}
		return n
	case reflect.Struct:
		n := &extNode{kind: extStruct}
		building[t] = n
		fs := msgpackFieldsOf(t, 0)
		some := false
		for name, f := range fs.byName {
			if fn := buildExtNode(f.typ, building); fn != nil {
				if n.fields == nil {
					n.fields = make(map[string]extField)
				}
				n.fields[name] = extField{fn, f.index}
				some = true
			}
		}
		for _, f := range fs.list {
			fn := buildExtNode(f.typ, building)
			n.list = append(n.list, extField{fn, f.index})
			some = some || fn != nil
		}
		if !some {
			building[t] = nil
			return nil
		}
		return n
	}
	return nil
}

// checkMsgPackExts refuses, with an error wrapping ErrMalformed, an ext
// value in data, a body that checkMsgPack accepted, where msgpack.Unmarshal
// would read a map when decoding data into v.
func checkMsgPackExts(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil // msgpack.Unmarshal refuses v
	}
	_, err := walkMsgPackExts(data, 0, extNodeOf(rv.Type().Elem()), rv.Elem(), 0)
	return err
}

// walkMsgPackExts checks the value at data[pos], decoded into v, a value
// of a type whose node is n, and returns the offset after it. v is invalid
// where msgpack/v5 decodes into a new value. hops counts the interfaces
// followed since the last value of data. walkMsgPackExts recurses once per
// level of nesting of data, which checkMsgPack bounds, and per interface.
func walkMsgPackExts(data []byte, pos int, n *extNode, v reflect.Value, hops int) (int, error) {
	if n == nil {
		return skipMsgPack(data, pos, 1), nil
	}
	v = indirect(v)
	if n.kind == extIface {
		if !v.IsValid() || v.IsNil() {
			return skipMsgPack(data, pos, 1), nil // decoded as msgpack/v5 finds it
		}
		if hops == maxDeref {
			return 0, fmt.Errorf("codec: msgpack: %s holds more than %d interfaces, one in the other", v.Type(), maxDeref)
		}
		e := v.Elem()
		return walkMsgPackExts(data, pos, extNodeOf(e.Type()), e, hops+1)
	}
	kind, count, next := msgpackHead(data, pos)
	var err error
	switch {
	case n.kind == extMap && kind == mpExt:
		return 0, malformed(pos, "ext of type %d where a %s is expected", extType(data, pos), n.typ)
	case n.kind == extMap && kind == mpMap:
		for range count {
			if next, err = walkMsgPackExts(data, next, n.key, reflect.Value{}, 0); err != nil {
				return 0, err
			}
			if next, err = walkMsgPackExts(data, next, n.elem, reflect.Value{}, 0); err != nil {
				return 0, err
			}
		}
		return next, nil
	case n.kind == extStruct && kind == mpMap:
		for range count {
			key, p := msgpackKey(data, next)
			if k, _, _ := msgpackHead(data, next); k == mpExt {
				// An interned string: once a field tagged intern has
				// filled msgpack/v5's dictionary, a fixext key names a
				// string in it, so any field.
				for _, f := range n.fields {
					if _, err := walkMsgPackExts(data, p, f.node, fieldValue(v, f.index), 0); err != nil {
						return 0, err
					}
				}
				next = skipMsgPack(data, p, 1)
				continue
			}
			f, ok := n.fields[string(key)]
			if !ok {
				next = skipMsgPack(data, p, 1)
				continue
			}
			if next, err = walkMsgPackExts(data, p, f.node, fieldValue(v, f.index), 0); err != nil {
				return 0, err
			}
		}
		return next, nil
	case n.kind == extStruct && kind == mpArray && count == len(n.list): // as_array or not
		for _, f := range n.list {
			if next, err = walkMsgPackExts(data, next, f.node, fieldValue(v, f.index), 0); err != nil {
				return 0, err
			}
		}
		return next, nil
	case n.kind == extElems && kind == mpArray:
		for i := range count {
			if next, err = walkMsgPackExts(data, next, n.elem, elemValue(v, i), 0); err != nil {
				return 0, err
			}
		}
		return next, nil
	}
	return skipMsgPack(data, pos, 1), nil // which the decoder refuses, or nil
}

// extType returns the type byte of the ext value at data[pos].
func extType(data []byte, pos int) int8 {
	if c := data[pos]; c >= 0xc7 && c <= 0xc9 { // ext 8/16/32: length, then the type
		return int8(data[pos+1+1<<(c-0xc7)])
	}
	return int8(data[pos+1]) // fixext
}

// indirect follows the pointers from v, as msgpack/v5 decodes into what
// they point to; the result is invalid if one is nil.
func indirect(v reflect.Value) reflect.Value {
	for i := 0; v.IsValid() && v.Kind() == reflect.Pointer; i++ {
		if v.IsNil() || i == maxDeref {
			return reflect.Value{}
		}
		v = v.Elem()
	}
	return v
}

// fieldValue returns the field of struct v at index, or an invalid value if v
// is invalid or the path goes through a nil pointer.
func fieldValue(v reflect.Value, index []int) reflect.Value {
	if !v.IsValid() {
		return v
	}
	f, err := v.FieldByIndexErr(index)
	if err != nil {
		return reflect.Value{}
	}
	return f
}

// elemValue returns element i of slice or array v as msgpack/v5 decodes
// into it: a slice keeps the elements up to its capacity (or copies them
// when it grows).
func elemValue(v reflect.Value, i int) reflect.Value {
	switch {
	case !v.IsValid():
	case i < v.Len():
		return v.Index(i)
	case v.Kind() == reflect.Slice && i < v.Cap():
		return v.Slice(0, v.Cap()).Index(i)
	}
	return reflect.Value{}
}
