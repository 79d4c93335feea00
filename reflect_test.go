package amqprpc

import (
	"net/rpc"
	"reflect"
)

// rpcPending is the size of net/rpc's own pending-call map, which it does not
// export. Call it only when no call is in flight.
func rpcPending(c *rpc.Client) int {
	return reflect.ValueOf(c).Elem().FieldByName("pending").Len()
}
