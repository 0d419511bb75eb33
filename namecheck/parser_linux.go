//go:build linux

package namecheck

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/egresskit/egress/bpf"
	"github.com/egresskit/egress/internal/cgroupbpf"
)

// Result is what the kernel's parser made of a client's first bytes.
type Result struct {
	// Outcome: "name", "more" (the name may be in bytes not seen yet) or
	// "none" (no name, and none will come).
	Outcome string
	Kind    string // tls, http or none
	Name    string
	Hash    uint64
}

// Parser runs the kernel's parser (bpf/namecheck.c, its test entry) on
// bytes, through BPF_PROG_TEST_RUN: tests and fuzzing check the very code
// the kernel runs.
type Parser struct {
	mu   sync.Mutex
	objs struct {
		Prog   *ebpf.Program `ebpf:"namecheck_parse"`
		Result *ebpf.Map     `ebpf:"nc_result"`
	}
}

// MaxParse is the most bytes Parse takes (BPF_PROG_TEST_RUN's limit).
const MaxParse = 3000

// NewParser loads the parser.
func NewParser() (*Parser, error) {
	spec, err := bpf.LoadNamecheck()
	if err != nil {
		return nil, err
	}
	p := &Parser{}
	if err := cgroupbpf.Load(spec, &p.objs, nil, "name check parser"); err != nil {
		return nil, err
	}
	return p, nil
}

// Close unloads the parser.
func (p *Parser) Close() error {
	return errors.Join(p.objs.Prog.Close(), p.objs.Result.Close())
}

var outcomes = [...]string{"more", "name", "none"}

// Parse parses data, the first bytes of a connection (1 to MaxParse).
func (p *Parser) Parse(data []byte) (Result, error) {
	if len(data) == 0 || len(data) > MaxParse {
		return Result{}, fmt.Errorf("parse %d bytes: want 1 to %d", len(data), MaxParse)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pkt := make([]byte, 14, 14+len(data))
	pkt[12], pkt[13] = 0x88, 0xb5 // not IP (no header checks): the program sees data from byte 14
	pkt = append(pkt, data...)
	var zero bpf.NamecheckNcRes
	if err := p.objs.Result.Put(uint32(0), &zero); err != nil {
		return Result{}, err
	}
	if _, err := p.objs.Prog.Run(&ebpf.RunOptions{Data: pkt}); err != nil {
		return Result{}, fmt.Errorf("run the parser: %w", err)
	}
	var r bpf.NamecheckNcRes
	if err := p.objs.Result.Lookup(uint32(0), &r); err != nil {
		return Result{}, err
	}
	res := Result{Outcome: "?", Kind: "?", Hash: r.Hash}
	if int(r.Result) < len(outcomes) {
		res.Outcome = outcomes[r.Result]
	}
	if int(r.Kind) < len(kinds) {
		res.Kind = kinds[r.Kind]
	}
	if res.Outcome == "name" {
		res.Name = string(r.Name[:min(int(r.NameLen), len(r.Name))])
	}
	return res, nil
}
