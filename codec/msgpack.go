package codec

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// msgPack encodes with github.com/vmihailenco/msgpack/v5. Structs are
// encoded as maps keyed by field name (or `msgpack` tag), so fields can be
// added on one side without breaking the other.
//
// Unmarshal first checks the body with checkMsgPack, because the decoder
// trusts the lengths a body declares and recurses once per nesting level:
// a hostile body of a few bytes could otherwise exhaust the memory or the
// stack of the process, which no recover can catch. Bodies refused by the
// check yield an error wrapping ErrMalformed.
//
// The check takes the data of an ext value for opaque bytes, but where
// msgpack/v5 decodes a Go map it reads an ext as a map header inside the
// ext's data, and the map's entries from there on, past the ext's end if
// need be (see msgpackext.go). So, for a body that holds an ext, Unmarshal
// also refuses with ErrMalformed, before decoding, an ext wherever v has a
// map: the whole body, or a field, element, key or value of a map type, or
// a map that a non-nil interface in v holds. An ext that the decoder reads
// whole is decoded as before: into a time.Time, into an interface, or into
// a type that decodes itself, such as one given to msgpack.RegisterExt
// (but see msgpackCustom about msgpack.Register).
//
// The decoder also panics on some well-formed bodies, for example a map
// with an array key decoded into a map[any]any ("hash of unhashable
// type"); Unmarshal turns such a panic into an error wrapping ErrMalformed
// rather than letting a request crash the server.
//
// Unmarshal then refuses a body of the wrong shape for v (see the package
// documentation), with an error wrapping ErrShape: msgpack/v5 would leave
// v zero, or fill a struct from an array by field position.
type msgPack struct{}

func (msgPack) ContentType() string { return "application/msgpack" }

// encoders holds encoders with their buffers, so that encoding a large
// body does not grow a new buffer from nothing every time.
var encoders = sync.Pool{New: func() any {
	e := &pooledEncoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	return e
}}

type pooledEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

// maxPooledBuffer is the largest buffer kept for the next body.
const maxPooledBuffer = 1 << 20

func (msgPack) Marshal(v any) ([]byte, error) {
	// The common raw payload, as an argument ([]byte) or a reply (net/rpc
	// hands replies over as *[]byte): one copy, exact size.
	b, ok := v.([]byte)
	if p, isPtr := v.(*[]byte); isPtr && p != nil {
		b, ok = *p, true
	}
	if ok && b != nil {
		return bin(b), nil
	}
	e := encoders.Get().(*pooledEncoder)
	defer func() {
		if e.buf.Cap() <= maxPooledBuffer {
			encoders.Put(e)
		}
	}()
	e.buf.Reset()
	if err := e.enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.Clone(e.buf.Bytes()), nil // exact size, owned by the caller
}

func (msgPack) Unmarshal(data []byte, v any) (err error) {
	if v == nil {
		return nil
	}
	exts, err := scanMsgPack(data)
	if err != nil {
		return err
	}
	if p, ok := v.(*[]byte); ok {
		if b, ok := binBody(data); ok {
			// A raw payload decodes without a copy: the body is the
			// caller's, as amqprpc hands each delivery's body out once.
			*p = b
			return nil
		}
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: msgpack: decoding panicked: %v", ErrMalformed, r)
		}
	}()
	if exts {
		if err := checkMsgPackExts(data, v); err != nil {
			return err
		}
	}
	if err := msgpack.Unmarshal(data, v); err != nil {
		return err
	}
	return checkMsgPackShape(data, v)
}

// largeBin is the payload size from which bin does not zero its buffer.
const largeBin = 4 << 10

// bin returns b as a msgpack bin of the exact size, in one copy. A large
// payload goes after a header in a slice with no room to spare, so that
// append allocates without zeroing what the copy overwrites (make clears
// it first: at 64 KiB, a third of Marshal's time); the header costs an
// allocation of its own, which small payloads are spared.
func bin(b []byte) []byte {
	if len(b) < largeBin {
		return append(appendBinHeader(make([]byte, 0, len(b)+5), len(b)), b...)
	}
	h := appendBinHeader(make([]byte, 0, 5), len(b))
	return append(h[:len(h):len(h)], b...)
}

// appendBinHeader appends the header of a msgpack bin of n bytes to dst,
// as msgpack.Marshal writes it.
func appendBinHeader(dst []byte, n int) []byte {
	switch {
	case n <= 0xff:
		return append(dst, 0xc4, byte(n))
	case n <= 0xffff:
		return append(dst, 0xc5, byte(n>>8), byte(n))
	default:
		return append(dst, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// binBody returns the payload of data if data is exactly one msgpack bin.
func binBody(data []byte) ([]byte, bool) {
	if len(data) < 2 {
		return nil, false
	}
	var n, h int
	switch data[0] {
	case 0xc4:
		n, h = int(data[1]), 2
	case 0xc5:
		if len(data) < 3 {
			return nil, false
		}
		n, h = int(data[1])<<8|int(data[2]), 3
	case 0xc6:
		if len(data) < 5 {
			return nil, false
		}
		n, h = int(data[1])<<24|int(data[2])<<16|int(data[3])<<8|int(data[4]), 5
	default:
		return nil, false
	}
	if h+n != len(data) {
		return nil, false
	}
	return data[h:len(data):len(data)], true
}
