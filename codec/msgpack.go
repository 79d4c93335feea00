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
// The decoder also panics on some well-formed bodies, for example a map
// with an array key decoded into a map[any]any ("hash of unhashable
// type"); Unmarshal turns such a panic into an error wrapping ErrMalformed
// rather than letting a request crash the server.
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
	if err := checkMsgPack(data); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: msgpack: decoding panicked: %v", ErrMalformed, r)
		}
	}()
	return msgpack.Unmarshal(data, v)
}
