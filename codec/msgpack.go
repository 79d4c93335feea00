package codec

import "github.com/vmihailenco/msgpack/v5"

// msgPack encodes with github.com/vmihailenco/msgpack/v5. Structs are
// encoded as maps keyed by field name (or `msgpack` tag), so fields can be
// added on one side without breaking the other.
type msgPack struct{}

func (msgPack) ContentType() string { return "application/msgpack" }

func (msgPack) Marshal(v any) ([]byte, error) { return msgpack.Marshal(v) }

func (msgPack) Unmarshal(data []byte, v any) error {
	if v == nil {
		return nil
	}
	return msgpack.Unmarshal(data, v)
}
