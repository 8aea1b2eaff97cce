// An HTTP server for node, used by e2e/servers_test.go and shown in
// docs/servers.md.
//
// It listens on fd 3 under socket activation (LISTEN_FDS=1 and LISTEN_PID
// its own pid: prefork's --sockets master, or systemd), else on the
// host:port given as its argument, else on PREFORK_LISTEN. Node before
// 22.12 cannot set SO_REUSEPORT (listen's reusePort option), so with
// prefork it runs in master socket mode only:
//
//	master run --sockets master --ready listen -- node app.js
//
// GET / answers 200 with the pid; GET /slow?ms=N answers the same after N
// milliseconds (default 1000).
//
// On SIGTERM it drains as the prefork child contract says: it closes its
// listener (its copy of fd 3 only: the master keeps the socket and its
// queue), answers every further request with Connection: close, closes a
// connection only after a response was written on it or once it has been
// idle for 1 s, and exits 0 when none is left. It does not call
// server.close(), which in node 19 and later also closes idle keep-alive
// connections at once, while a client may be sending on them.
'use strict';

const http = require('http');
const net = require('net');

const idleLimitMs = 1000;

// conns maps each open connection to the time it became idle (0: a request
// is being answered on it).
const conns = new Map();
let draining = false;

const server = http.createServer((req, res) => {
  conns.set(req.socket, 0);
  res.on('finish', () => {
    if (conns.has(req.socket)) {
      conns.set(req.socket, Date.now());
    }
  });
  if (draining) {
    res.setHeader('Connection', 'close');
  }
  const answer = () => {
    const body = `${process.pid}\n`;
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  };
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname === '/slow') {
    setTimeout(answer, Number(url.searchParams.get('ms') || 1000));
  } else {
    answer();
  }
});
// Idle keep-alive connections are the drain's to close, not a timer's.
server.keepAliveTimeout = 0;

server.on('connection', (socket) => {
  conns.set(socket, Date.now());
  socket.on('close', () => {
    conns.delete(socket);
    if (draining) {
      maybeExit();
    }
  });
});

function maybeExit() {
  if (conns.size === 0) {
    process.exit(0);
  }
}

function drain() {
  if (draining) {
    return;
  }
  draining = true;
  // net.Server's close: stop accepting, without http.Server's
  // closeIdleConnections.
  net.Server.prototype.close.call(server);
  setInterval(() => {
    const now = Date.now();
    for (const [socket, idleSince] of conns) {
      if (idleSince !== 0 && now - idleSince >= idleLimitMs) {
        socket.destroy();
      }
    }
  }, 100);
  maybeExit();
}

process.on('SIGTERM', drain);
process.on('SIGINT', drain);

function listenTarget() {
  if (process.env.LISTEN_FDS === '1' && process.env.LISTEN_PID === String(process.pid)) {
    return { fd: 3 };
  }
  const addr = process.argv[2] || process.env.PREFORK_LISTEN;
  if (!addr) {
    console.error('app.js: no fd 3 (LISTEN_FDS), no HOST:PORT argument and no PREFORK_LISTEN');
    process.exit(2);
  }
  const i = addr.lastIndexOf(':');
  return { host: addr.slice(0, i).replace(/^\[|\]$/g, '') || undefined, port: Number(addr.slice(i + 1)) };
}

server.on('error', (err) => {
  console.error(`app.js: ${err.message}`);
  process.exit(1);
});
server.listen(listenTarget());
