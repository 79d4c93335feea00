// Package codec holds the body encodings amqprpc puts in AMQP messages.
//
// A [Codec] turns the args of a call and its reply into message bodies and
// back. The codec travels with every message in its content_type property:
// a server decodes a request with the codec named there and answers in the
// same one, so clients that use different codecs can share one server.
//
// "codec" here means body encoding only; the net/rpc codecs that move whole
// calls over AMQP are amqprpc.NewClientCodec and amqprpc.NewServerCodec.
//
// # Bodies of the wrong shape
//
// encoding/gob, net/rpc's own encoding, refuses a body whose type has
// nothing in common with the value it is decoded into. msgpack/v5 and
// encoding/json decode such a body into zero values without an error, so a
// server would run its handler on them. [MsgPack] and [JSON] therefore
// check a body after decoding it, and refuse with an error wrapping
// [ErrShape]:
//
//   - a map (a JSON object) with keys, none of which selects a field of
//     the struct it is decoded into, such as the encoding of a struct of
//     another type;
//   - an array decoded into a struct, which msgpack/v5 would fill field by
//     field in order (encoding/json refuses it itself), unless msgpack/v5
//     encodes the struct as an array: its field _msgpack is tagged
//     `msgpack:",as_array"`;
//   - nil (JSON null) as the whole body when v points to a value that
//     cannot be nil: a struct, bool, number, string or array.
//
// The first two rules apply at any depth, through pointers: to struct
// fields, and to the elements of slices, arrays and maps. Everything else
// decodes as the library decodes it:
//
//   - Keys that select no field are ignored if one key does, so a field
//     can be added on one side only; an empty map is accepted, and a
//     struct with no fields accepts any map.
//   - nil for a pointer, slice, map or interface sets it to nil (a Go
//     server's nil slice reply is a nil body), and nil inside a body is
//     accepted anywhere, as a field or element left out.
//   - Keys select fields by each library's own rules: msgpack/v5 matches
//     the `msgpack` tag or the Go name exactly, with its alias option and
//     the fields of embedded structs inlined; encoding/json matches the
//     `json` tag or the Go name, also case-insensitively, with the fields
//     of embedded structs promoted.
//   - Values of types that decode themselves (msgpack.CustomDecoder,
//     msgpack.Unmarshaler, [encoding/json.Unmarshaler], [encoding.TextUnmarshaler],
//     and for msgpack [encoding.BinaryUnmarshaler]; so [time.Time]) and
//     of interface types are not looked into. A decoder given with
//     msgpack.Register is the exception: the check cannot see it, and
//     checks such a struct as a plain one.
//   - Values nested more than 100 levels deep are not checked (msgpack
//     bodies nested that deep are refused with [ErrMalformed]).
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
	//
	// MsgPack and JSON refuse a body of the wrong shape for v, which would
	// leave v zero, with an error wrapping ErrShape: see "Bodies of the
	// wrong shape" in the package documentation. Such a body may have
	// been decoded into v in part.
	Unmarshal(data []byte, v any) error
}

// The codecs shipped with amqprpc. MsgPack is amqprpc's default.
var (
	MsgPack Codec = msgPack{}
	JSON    Codec = jsonCodec{}
	Gob     Codec = gobCodec{}
)
