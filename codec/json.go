package codec

import "encoding/json"

// jsonCodec encodes with encoding/json: the most readable body in the
// RabbitMQ management UI, and the one other languages decode most easily.
// Unmarshal refuses a body of the wrong shape for v (see the package
// documentation), with an error wrapping ErrShape: encoding/json would
// leave v zero.
type jsonCodec struct{}

func (jsonCodec) ContentType() string { return "application/json" }

func (jsonCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

func (jsonCodec) Unmarshal(data []byte, v any) error {
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return err
	}
	return checkJSONShape(data, v)
}
