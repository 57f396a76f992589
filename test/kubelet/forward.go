package kubelet

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
)

// Forward accepts connections on Listen and copies each, both ways, to a new connection to
// Dial. Addresses are "tcp:HOST:PORT" or "unix:PATH". A Unix socket is a file, so it crosses
// network namespaces: a TCP port inside a sandbox reaches a server outside it through a Unix
// socket in a directory both can see, and the other way round.
type Forward struct {
	Listen string `json:"listen"`
	Dial   string `json:"dial"`
}

// Start listens and forwards in the background until the returned listener is closed (or the
// process ends). A Unix socket file left by an earlier listener is replaced. Listening on
// "tcp:127.0.0.1:0" picks a free port: the listener's Addr says which.
func (f Forward) Start() (net.Listener, error) {
	network, addr, err := splitAddress(f.Listen)
	if err != nil {
		return nil, err
	}
	dialNetwork, dialAddr, err := splitAddress(f.Dial)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		_ = os.Remove(addr)
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("forward %s -> %s: %w", f.Listen, f.Dial, err)
	}
	if network == "unix" {
		_ = os.Chmod(addr, 0o777) // a sandboxed process may run as another user
	}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go pipe(in, dialNetwork, dialAddr)
		}
	}()
	return l, nil
}

func splitAddress(a string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(a, ":")
	if !ok || (network != "tcp" && network != "unix") || addr == "" {
		return "", "", fmt.Errorf("address %q is neither tcp:HOST:PORT nor unix:PATH", a)
	}
	return network, addr, nil
}

// pipe connects in to a new connection to addr until either side is done.
func pipe(in net.Conn, network, addr string) {
	defer in.Close()
	out, err := net.Dial(network, addr)
	if err != nil {
		return // the client sees the connection close, as with a refused connection
	}
	defer out.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	copyHalf := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if c, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = c.CloseWrite()
		}
	}
	go copyHalf(out, in)
	go copyHalf(in, out)
	wg.Wait()
}
