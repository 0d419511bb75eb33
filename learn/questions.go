package learn

import (
	"github.com/egresskit/egress/internal/dnsanswer"
	"github.com/egresskit/egress/store"
)

// maxPendingQuestions bounds the distinct questions gathered between two
// flushes; what does not fit is counted (store: questions_unrecorded).
const maxPendingQuestions = 50000

// questionKey identifies a question observation: who asked what, and
// what the answer said.
type questionKey struct {
	uid   uint32
	name  string
	qtype uint16
	rcode int
}

// addQuestion records the question of a matched answer, with its answer
// code (NXDOMAIN included: the DNS policy allows what was asked while
// learning, so search-domain tries keep their speed); a.mu is held.
func (a *aggregator) addQuestion(p DNSPacket, ans *dnsanswer.Answer) {
	if ans.Question == "" {
		return
	}
	k := questionKey{uid: p.UID, name: ans.Question, qtype: ans.QType, rcode: ans.Rcode}
	q, ok := a.questions[k]
	if !ok && len(a.questions) >= maxPendingQuestions {
		a.questionsOver++
		return
	}
	if !ok {
		q = store.QuestionObservation{UID: p.UID, Name: ans.Question, QType: ans.QType, Rcode: ans.Rcode}
	}
	q.Hits++
	if p.Time.After(q.Seen) {
		q.Seen = p.Time
	}
	a.questions[k] = q
}

// giveBackQuestions returns questions that could not be committed.
func (a *aggregator) giveBackQuestions(qs []store.QuestionObservation, over uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.questionsOver += over
	for _, q := range qs {
		k := questionKey{uid: q.UID, name: q.Name, qtype: q.QType, rcode: q.Rcode}
		cur, ok := a.questions[k]
		if !ok && len(a.questions) >= maxPendingQuestions {
			a.questionsOver += q.Hits
			continue
		}
		cur.UID, cur.Name, cur.QType, cur.Rcode = q.UID, q.Name, q.QType, q.Rcode
		cur.Hits += q.Hits
		if q.Seen.After(cur.Seen) {
			cur.Seen = q.Seen
		}
		a.questions[k] = cur
	}
}
