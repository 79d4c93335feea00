package codec

import "errors"

// ErrMalformed is wrapped by the errors a codec returns when it refuses a
// body before decoding it, because the body is not well-formed, or declares
// sizes or a nesting depth that the decoder could not handle safely, or
// (MsgPack) has an ext value where the value decoded into has a map, which
// msgpack/v5 would read from the ext's data. Test for it with errors.Is.
var ErrMalformed = errors.New("codec: malformed body")

// ErrShape is wrapped by the errors MsgPack and JSON return when a
// well-formed body does not have the shape of the value it is decoded
// into, so that decoding it would leave that value zero, or fill a struct
// by field position: a map none of whose keys names a field of the
// struct, an array for a struct, or nil for a value that cannot be nil.
// Test for it with errors.Is. The rules are in the package
// documentation.
var ErrShape = errors.New("codec: wrong shape")
