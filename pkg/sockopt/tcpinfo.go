package sockopt

import "errors"

// ErrNotListening is returned by AcceptQueue for a TCP socket that is not
// listening, whose TCP_INFO fields mean something else.
var ErrNotListening = errors.New("sockopt: not a listening socket")
