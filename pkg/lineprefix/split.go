package lineprefix

import "bytes"

// splitter cuts a stream into pieces of at most max bytes: a line without
// its '\n', or, for a longer line, pieces of max bytes and a last shorter
// one. It is pure, apart from the emit function it is given, so that a fuzz
// target checks it.
type splitter struct {
	max int
	// line is the unterminated piece read so far, at most max bytes.
	line []byte
	// cont says that line continues a piece already emitted.
	cont bool
}

// write feeds p to the splitter, which calls emit for each piece p
// completes; continued is true for the second and later pieces of a line.
// emit must not keep piece. A piece is emitted when its '\n' arrives or, if
// it has max bytes, when more of its line arrives, so that a line of
// exactly max bytes is not cut.
func (s *splitter) write(p []byte, emit func(piece []byte, continued bool)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i]
		}
		// A whole line in p and nothing held: emit it in place, the
		// usual case of a child that writes whole lines.
		if i >= 0 && len(s.line) == 0 && len(seg) <= s.max {
			emit(seg, s.cont)
			s.cont = false
			p = p[i+1:]
			continue
		}
		for len(seg) > 0 {
			if len(s.line) == s.max {
				emit(s.line, s.cont)
				s.line, s.cont = s.line[:0], true
			}
			n := min(s.max-len(s.line), len(seg))
			s.line = append(s.line, seg[:n]...)
			seg = seg[n:]
		}
		if i < 0 {
			return
		}
		emit(s.line, s.cont)
		s.line, s.cont = s.line[:0], false
		p = p[i+1:]
	}
}

// flush emits the unterminated piece held, at the end of the stream.
func (s *splitter) flush(emit func(piece []byte, continued bool)) {
	if len(s.line) > 0 {
		emit(s.line, s.cont)
	}
	s.line, s.cont = s.line[:0], false
}
