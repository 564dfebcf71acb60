package notify

// ListenerPID is the server process of b's listening connection, for tests
// that end it.
func ListenerPID(b *Bus) uint32 { return b.conn.Load().PgConn().PID() }
