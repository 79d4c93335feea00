// Package codec holds the body encodings amqprpc puts in AMQP messages.
//
// A [Codec] turns the args of a call and its reply into message bodies and
// back. The codec travels with every message in its content_type property:
// a server decodes a request with the codec named there and answers in the
// same one, so clients that use different codecs can share one server.
//
// "codec" here means body encoding only; the net/rpc codecs that move whole
// calls over AMQP are amqprpc.NewClientCodec and amqprpc.NewServerCodec.
package codec

// Codec encodes and decodes message bodies. Implementations must be safe
// for concurrent use.
type Codec interface {
	// ContentType is the MIME type written to and matched against the AMQP
	// content_type property, for example "application/msgpack".
	ContentType() string
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, which is a pointer. A nil v discards
	// the data without decoding it. v may keep data: amqprpc hands each
	// message body to Unmarshal once and never reuses it. (MsgPack decodes
	// a binary into a *[]byte as a slice of data, without a copy.)
	Unmarshal(data []byte, v any) error
}

// The codecs shipped with amqprpc. MsgPack is amqprpc's default.
var (
	MsgPack Codec = msgPack{}
	JSON    Codec = jsonCodec{}
	Gob     Codec = gobCodec{}
)

var builtin = []Codec{MsgPack, JSON, Gob}

// ByContentType returns the built-in codec whose ContentType is ct, or one
// of extra (checked first). amqprpc's servers use a narrower rule: they
// decode msgpack, JSON and their own codec, and gob only when it is their
// own, because encoding/gob is not safe on hostile input.
func ByContentType(ct string, extra ...Codec) (Codec, bool) {
	for _, c := range extra {
		if c != nil && c.ContentType() == ct {
			return c, true
		}
	}
	for _, c := range builtin {
		if c.ContentType() == ct {
			return c, true
		}
	}
	return nil, false
}
