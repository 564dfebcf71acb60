package server

import (
	"context"
	"crypto/tls"
	"net"
)

// listenAlso listens on each of Config.AlsoListen at the port of main,
// with TLS when tlsCfg is set. A host that cannot be had (the address is
// not this machine's, the port is taken there) is logged and skipped: the
// server still serves on main.
func (s *Server) listenAlso(ctx context.Context, main net.Addr, tlsCfg *tls.Config) []net.Listener {
	if len(s.cfg.AlsoListen) == 0 {
		return nil
	}
	_, port, err := net.SplitHostPort(main.String())
	if err != nil {
		s.log.Warn("listen on more addresses: the main address has no port", "addr", main.String())
		return nil
	}
	var out []net.Listener
	for _, h := range s.cfg.AlsoListen {
		addr := net.JoinHostPort(h, port)
		ln, err := new(net.ListenConfig).Listen(ctx, "tcp", addr)
		if err != nil {
			s.log.Warn("cannot also listen on "+addr+": the local backend's containers may not reach the server; start it with --host 0.0.0.0 or give --external-url",
				"err", err)
			continue
		}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		s.log.Info("also listening, for the local backend's containers", "addr", ln.Addr().String())
		out = append(out, ln)
	}
	return out
}
