package dnsanswer

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/miekg/dns"
)

// Question is the header and the question of a DNS message: what a query
// asks, and what an answer says it answers.
type Question struct {
	ID       uint16
	Response bool   // the QR bit
	Name     string // lower-case, no trailing dot
	QType    uint16
	QClass   uint16
}

// ErrQuestionCount is returned by ParseQuestion for a message that does not
// hold exactly one question: no client asks more, and such an answer
// cannot be matched to a query.
var ErrQuestionCount = errors.New("not exactly one question")

// ParseQuestion reads the header and the only question of a DNS message.
// Only those bytes need to be present. Names compare case-insensitively
// (a resolver may echo the question in another case), so Name is
// lower-cased.
func ParseQuestion(payload []byte) (q Question, err error) {
	defer func() {
		if r := recover(); r != nil {
			q, err = Question{}, fmt.Errorf("parse dns question: %w: %v", errPanic, r)
		}
	}()
	if len(payload) < headerLen {
		return Question{}, fmt.Errorf("parse dns question: message too short: %d bytes, header needs %d", len(payload), headerLen)
	}
	if n := binary.BigEndian.Uint16(payload[4:]); n != 1 {
		return Question{}, fmt.Errorf("parse dns question: %w: %d", ErrQuestionCount, n)
	}
	name, next, err := dns.UnpackDomainName(payload, headerLen)
	if err != nil {
		return Question{}, fmt.Errorf("parse dns question: %w", err)
	}
	if next+4 > len(payload) {
		return Question{}, errors.New("parse dns question: cut short after the name")
	}
	return Question{
		ID:       binary.BigEndian.Uint16(payload[0:]),
		Response: binary.BigEndian.Uint16(payload[2:])&qrBit != 0,
		Name:     normalize(name),
		QType:    binary.BigEndian.Uint16(payload[next:]),
		QClass:   binary.BigEndian.Uint16(payload[next+2:]),
	}, nil
}
