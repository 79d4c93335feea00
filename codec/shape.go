package codec

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The shape checks of MsgPack and JSON run after the library decoded a body
// without error. They walk the body alongside the Go type it was decoded
// into, looking only into the parts of the body that the type fills with
// structs, and refuse what the package documentation lists, with an error
// wrapping ErrShape. What they expect of each type is worked out once per
// type and codec and kept in a shapeRules.

// maxShapeDepth is how deep in a body the shape checks look: values nested
// deeper are not checked. checkMsgPack refuses msgpack bodies nested deeper;
// encoding/json accepts up to 10000 levels.
const maxShapeDepth = maxMsgPackDepth

// maxShownKeys is how many keys an error lists; maxShownKeyLen is how many
// bytes of each.
const (
	maxShownKeys   = 4
	maxShownKeyLen = 32
)

// shapeKind says what a shape checks.
type shapeKind uint8

const (
	shapeStruct shapeKind = iota + 1 // a struct: the map or array given for it, then its fields
	shapeElems                       // a slice or array: each element
	shapeValues                      // a map: each value
)

// A shape is what the checks expect of a value decoded into one Go type
// that is or holds a struct. A type that holds no struct, decodes itself,
// or is an interface has no shape (nil): its values are not looked into.
// Shapes of recursive types refer to themselves.
type shape struct {
	kind shapeKind
	typ  reflect.Type // shapeStruct: the struct, for error messages
	elem *shape       // shapeElems, shapeValues: the shape of each element or value

	// For shapeStruct: fields maps each key that the library matches with
	// a field to the shape of that field; folded maps the same keys folded
	// with foldName (JSON, which also matches keys case-insensitively).
	// names and shapes hold fields too if it is small, as comparing a few
	// short keys is faster than hashing one.
	fields  map[string]*shape
	folded  map[string]*shape
	nfields int // len(fields)
	names   []string
	shapes  []*shape
	// asArray: the struct is declared array-encoded (msgpack); list holds
	// the shapes of its fields in array order.
	asArray bool
	list    []*shape
	// leaf: no field has a shape, so once a key matches, the rest of
	// the map needs no look.
	leaf bool
}

// namedField is a key that selects a struct field, with the field's type.
type namedField struct {
	name string
	typ  reflect.Type
}

// structFields are the keys a library matches with the fields of a struct.
type structFields struct {
	names   []namedField // each key once; JSON: in field order
	asArray bool         // msgpack: the struct is declared array-encoded
	list    []reflect.Type
}

// shapeRules are one codec's rules for which types decode themselves and
// which keys select which struct fields, with the targets built from them.
type shapeRules struct {
	codec   string // "msgpack" or "json"
	mapWord string // what the codec calls a map: "map" or "object"
	nilWord string // and nil: "nil" or "null"
	fold    bool   // keys also match fields case-insensitively
	// custom reports whether values of type t, or of *t, decode themselves.
	custom func(t reflect.Type) bool
	fields func(t reflect.Type) structFields

	// targets caches a *target for each pointer type decoded into, and
	// recent some of them again, in a slot picked by the type's address:
	// a hit there costs no hashing.
	targets sync.Map
	recent  [64]atomic.Pointer[target]
}

// A target is what the checks expect of a whole body decoded into one
// pointer type.
type target struct {
	typ   uintptr      // the address of the pointer type
	elem  reflect.Type // the type pointed to
	nilOK bool         // a nil body is fine: elem can be nil or decodes itself
	shape *shape       // nil: nothing to look into
}

// target returns what the checks expect of a body decoded into v.
func (r *shapeRules) target(v any) *target {
	t := reflect.TypeOf(v)
	addr := reflect.ValueOf(t).Pointer()
	slot := &r.recent[addr/16%uintptr(len(r.recent))]
	if tg := slot.Load(); tg != nil && tg.typ == addr {
		return tg
	}
	tg := r.load(t, addr)
	slot.Store(tg)
	return tg
}

// load returns the target for pointer type t, at addr, from targets,
// building it the first time.
func (r *shapeRules) load(t reflect.Type, addr uintptr) *target {
	if tg, ok := r.targets.Load(t); ok {
		return tg.(*target)
	}
	tg := &target{typ: addr, nilOK: true}
	if t.Kind() == reflect.Pointer { // always, once the library decoded into v
		e := t.Elem()
		tg.elem = e
		tg.nilOK = nillable(e.Kind()) || r.custom(e)
		tg.shape = r.build(e, map[reflect.Type]*shape{})
	}
	got, _ := r.targets.LoadOrStore(t, tg)
	return got.(*target)
}

// maxDeref bounds the pointers build follows, for types like type P *P.
const maxDeref = 64

// build returns the shape of t, or nil if values of t need no check.
// building holds the shapes built or being built, so that recursive types
// end: a slice or map type may keep a shape whose elem turned out nil,
// which costs a walk but checks nothing wrong.
func (r *shapeRules) build(t reflect.Type, building map[reflect.Type]*shape) *shape {
	for i := 0; t.Kind() == reflect.Pointer; i++ {
		if i == maxDeref {
			return nil
		}
		t = t.Elem()
	}
	if s, ok := building[t]; ok {
		return s
	}
	if t.Kind() == reflect.Interface || r.custom(t) {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		s := &shape{kind: shapeStruct, typ: t}
		building[t] = s
		fs := r.fields(t)
		s.fields = make(map[string]*shape, len(fs.names))
		for _, f := range fs.names {
			s.fields[f.name] = r.build(f.typ, building)
		}
		if r.fold {
			s.folded = make(map[string]*shape, len(fs.names))
			for _, f := range fs.names {
				k := string(foldName([]byte(f.name)))
				if _, ok := s.folded[k]; !ok { // the first field wins, as in encoding/json
					s.folded[k] = s.fields[f.name]
				}
			}
		}
		if fs.asArray {
			s.asArray = true
			for _, ft := range fs.list {
				s.list = append(s.list, r.build(ft, building))
			}
		}
		s.nfields = len(s.fields)
		s.leaf = true
		for name, f := range s.fields {
			s.leaf = s.leaf && f == nil
			if len(s.fields) <= maxScannedFields {
				s.names = append(s.names, name)
				s.shapes = append(s.shapes, f)
			}
		}
		return s
	case reflect.Slice, reflect.Array, reflect.Map:
		s := &shape{kind: shapeElems}
		if t.Kind() == reflect.Map {
			s.kind = shapeValues
		}
		building[t] = s
		if s.elem = r.build(t.Elem(), building); s.elem == nil {
			building[t] = nil
			return nil
		}
		return s
	}
	return nil
}

// maxScannedFields is the most fields that field looks through one by one
// rather than in a map.
const maxScannedFields = 8

// field returns the shape of the field of struct shape s that key selects,
// and whether there is one.
func (s *shape) field(key []byte) (*shape, bool) {
	if s.names != nil {
		for i, name := range s.names {
			if string(key) == name {
				return s.shapes[i], true
			}
		}
		return nil, false
	}
	f, ok := s.fields[string(key)]
	return f, ok
}

// nillable reports whether values of kind k can be nil.
func nillable(k reflect.Kind) bool {
	switch k {
	case reflect.Pointer, reflect.Slice, reflect.Map, reflect.Interface,
		reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return true
	}
	return false
}

// implementsAny reports whether t or *t implements one of ifaces.
func implementsAny(t reflect.Type, ifaces ...reflect.Type) bool {
	pt := reflect.PointerTo(t)
	for _, i := range ifaces {
		if t.Implements(i) || pt.Implements(i) {
			return true
		}
	}
	return false
}

// errorf returns an error wrapping ErrShape that names the offset in the
// body of the value at fault, unless off is negative (the whole body).
func (r *shapeRules) errorf(off int, format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	if off < 0 {
		return fmt.Errorf("%w: %s: %s", ErrShape, r.codec, msg)
	}
	return fmt.Errorf("%w: %s: %s at offset %d", ErrShape, r.codec, msg, off)
}

// nilError refuses nil for the whole body, decoded into a t.
func (r *shapeRules) nilError(t reflect.Type) error {
	return r.errorf(-1, "%s where a value of type %s is expected", r.nilWord, t)
}

// arrayError refuses an array for struct t.
func (r *shapeRules) arrayError(off int, t reflect.Type) error {
	article := "a"
	if r.mapWord == "object" {
		article = "an"
	}
	return r.errorf(off, "array where %s %s is expected for struct %s", article, r.mapWord, t)
}

// noFieldError refuses a map of n keys (the first of which are shown)
// that selects no field of struct t.
func (r *shapeRules) noFieldError(off int, t reflect.Type, shown [][]byte, n int) error {
	var b strings.Builder
	b.WriteString(r.mapWord)
	if n == 1 {
		b.WriteString(" with key ")
	} else {
		b.WriteString(" with keys ")
	}
	for i, k := range shown {
		if i > 0 {
			b.WriteString(", ")
		}
		if len(k) > maxShownKeyLen {
			b.WriteString(strconv.Quote(string(k[:maxShownKeyLen])))
			b.WriteString("...")
		} else {
			b.WriteString(strconv.Quote(string(k)))
		}
	}
	if n > len(shown) {
		fmt.Fprintf(&b, " and %d more", n-len(shown))
	}
	return r.errorf(off, "%s shares no field with %s", b.String(), t)
}
