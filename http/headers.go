package dlmhttp

import (
	"fmt"
	"net/http"
)

// maxHeaderBytes caps a request's line and header block, at net/http's
// default. net/http answers a block over http.Server.MaxHeaderBytes with a
// plain-text 431 before any handler runs, so the server lets it read up to
// headerReadLimit, and the handler refuses a block over maxHeaderBytes
// itself, in the JSON error shape. Only a block over headerReadLimit still
// gets net/http's own answer; what one request can make the server read
// stays bounded.
const (
	maxHeaderBytes  = 1 << 20
	headerReadLimit = 2 * maxHeaderBytes
)

// headerBytes is the size of r's request line and headers as sent, near
// enough: the line, then "Name: value\r\n" for each header.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + len("  \r\n")
	n += len("Host: \r\n") + len(r.Host)
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + len(": \r\n")
		}
	}
	return n
}

// headersTooLarge refuses a request whose headers are over maxHeaderBytes:
// 431, which is not in the API's table of error codes, with code payload_too_large, the code
// of the same mistake in a body.
type headersTooLarge struct{ n int }

func (e *headersTooLarge) Error() string {
	return fmt.Sprintf("request headers are %d bytes, more than the %d allowed", e.n, maxHeaderBytes)
}
