package linearize_test

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// cutProxy is a TCP proxy on loopback that cuts connections at random: a
// request forwarded and its answer dropped (the operation happened, the
// client cannot know), or a request cut off on its way in.
type cutProxy struct {
	ln      net.Listener
	backend func() string
	// Per chunk of bytes: the chance of cutting after forwarding a chunk of
	// a request, and before forwarding a chunk of an answer.
	pRequest, pAnswer float64

	mu    sync.Mutex
	rng   *rand.Rand
	conns map[net.Conn]struct{}
	cuts  atomic.Int64
	wg    sync.WaitGroup
}

func newCutProxy(t testing.TB, backend func() string, pRequest, pAnswer float64, seed uint64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: backend, pRequest: pRequest, pAnswer: pAnswer,
		rng: rand.New(rand.NewPCG(seed, 0)), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) URL() string { return "http://" + p.ln.Addr().String() }

func (p *cutProxy) roll(prob float64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rng.Float64() < prob
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.pipe(c)
		}()
	}
}

func (p *cutProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *cutProxy) pipe(client net.Conn) {
	server, err := net.Dial("tcp", p.backend())
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			server.Close()
			p.track(client, false)
			p.track(server, false)
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // requests: forward, then maybe cut
		defer wg.Done()
		defer closeBoth()
		p.copy(server, client, p.pRequest, false)
	}()
	go func() { // answers: maybe cut, else forward
		defer wg.Done()
		defer closeBoth()
		p.copy(client, server, p.pAnswer, true)
	}()
	wg.Wait()
}

func (p *cutProxy) copy(dst io.Writer, src io.Reader, prob float64, before bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if before && p.roll(prob) {
				p.cuts.Add(1)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if !before && p.roll(prob) {
				p.cuts.Add(1)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
