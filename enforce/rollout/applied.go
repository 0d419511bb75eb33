//go:build linux

package rollout

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/store"
)

// The applied tables, beside the store: what restore needs when the store
// cannot be read. For each table and target (network namespace), a folder
//
//	<db>.applied/<table>@<target>/
//	    state.json    the current generation (the one in the kernel) and the
//	                  kept one (the newest applied or confirmed)
//	    plan-N.json   the plan of generation N: restore applies it over
//	                  netlink, no nft binary needed
//	    plan-N.nft    the same table as an nft script ("nft -f" loads it)
//
// holds the plans of those two generations only. Every file is written to
// a temporary file, synced and renamed, mode 0600, in folders of mode 0700.

// AppliedGen is a generation as the files beside the store know it.
type AppliedGen struct {
	N uint64 `json:"n"`
	// Plan is the generation whose plan it installed (plan-Plan.json);
	// 0 for a removal.
	Plan  uint64    `json:"plan,omitempty"`
	Mode  string    `json:"mode"`
	State string    `json:"state"`
	Time  time.Time `json:"time"`
}

// AppliedState is state.json.
type AppliedState struct {
	Target  string      `json:"target"`
	Table   string      `json:"table"`
	Current *AppliedGen `json:"current,omitempty"`
	Kept    *AppliedGen `json:"kept,omitempty"`
	Written time.Time   `json:"written"`
}

// Restorable is what a restore puts back from the files: the current
// generation when it was kept, else the kept one before it (a pending
// generation counts as not confirmed). Nil: nothing was ever kept.
func (s *AppliedState) Restorable() *AppliedGen {
	if s.Current != nil && (s.Current.State == store.GenApplied || s.Current.State == store.GenConfirmed) {
		return s.Current
	}
	return s.Kept
}

func appliedGenOf(g *store.Generation) *AppliedGen {
	if g == nil {
		return nil
	}
	a := &AppliedGen{N: g.N, Plan: g.Effective(), Mode: g.Mode, State: g.State, Time: g.Time}
	if g.Mode == ModeRemoved {
		a.Plan = 0
	}
	return a
}

var nsNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// AppliedDir is the folder of the files of table in target, beside the
// store file db.
func AppliedDir(db string, target, table string) string {
	key := "host"
	switch name, ok := strings.CutPrefix(target, "/run/netns/"); {
	case target == "":
	case ok && nsNameRe.MatchString(name):
		key = "netns-" + name
	default:
		h := sha256.Sum256([]byte(target))
		key = "ns-" + hex.EncodeToString(h[:8])
	}
	return filepath.Join(db+".applied", table+"@"+key)
}

func planFile(dir string, n uint64, ext string) string {
	return filepath.Join(dir, "plan-"+strconv.FormatUint(n, 10)+ext)
}

// planSource gives generation n's plan, and its JSON and nft text when at
// hand (nil: render them).
type planSource func(n uint64) (p *plan.Plan, raw, text []byte, err error)

// writeApplied writes state.json and the plans it names (those not yet
// there, from planOf), then removes the plans it no longer names.
func writeApplied(dir string, s AppliedState, planOf planSource) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write the applied tables: %w", err)
	}
	keep := map[string]bool{"state.json": true}
	for _, n := range plansNeeded(dir, s) {
		js := planFile(dir, n, ".json")
		keep[filepath.Base(js)], keep[filepath.Base(planFile(dir, n, ".nft"))] = true, true
		keep[filepath.Base(indexFile(dir, n))] = true
		if _, err := os.Stat(js); err == nil {
			continue
		}
		if err := writeWholePlan(dir, n, planOf); err != nil {
			return err
		}
	}
	s.Written = time.Now().UTC()
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, "state.json"), append(data, '\n')); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("write the applied tables: %w", err)
	}
	for _, e := range entries {
		if !keep[e.Name()] && (strings.HasPrefix(e.Name(), "plan-") || strings.HasPrefix(e.Name(), "index-")) {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// plansNeeded are the plans state s names, and the plans their files
// patch (at most maxPlanChain deep).
func plansNeeded(dir string, s AppliedState) []uint64 {
	var out []uint64
	for _, a := range []*AppliedGen{s.Current, s.Kept} {
		if a == nil {
			continue
		}
		for n, depth := a.Plan, 0; n != 0 && depth < maxPlanChain && !slices.Contains(out, n); n, depth = patchBase(dir, n), depth+1 {
			out = append(out, n)
		}
	}
	return out
}

// writeWholePlan writes the files of plan n (a whole plan, from planOf).
func writeWholePlan(dir string, n uint64, planOf planSource) error {
	p, data, text, err := planOf(n)
	if err != nil {
		return fmt.Errorf("write the applied tables: %w", err)
	}
	if data == nil || plan.IsPatch(data) { // a whole plan: its base may be gone
		if data, err = p.JSON(); err != nil {
			return fmt.Errorf("encode plan of generation %d: %w", n, err)
		}
		text = nil
	}
	if text == nil {
		var b bytes.Buffer
		if err := p.Text(&b); err != nil {
			return fmt.Errorf("render plan of generation %d: %w", n, err)
		}
		text = b.Bytes()
	}
	if err := writePlanFiles(dir, n, data, text); err != nil {
		return err
	}
	if _, err := os.Stat(indexFile(dir, n)); err != nil {
		return writeIndex(dir, n, plan.IndexOf(p), false)
	}
	return nil
}

// writePlanFiles writes plan-N.nft, then plan-N.json (plan-N.json present
// means both are). Until state.json names them, they are not used.
func writePlanFiles(dir string, n uint64, data, text []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write the applied tables: %w", err)
	}
	if err := writeAtomic(planFile(dir, n, ".nft"), text); err != nil {
		return err
	}
	return writeAtomic(planFile(dir, n, ".json"), data)
}

// removePlanFiles removes the plan files of generation n.
func removePlanFiles(dir string, n uint64) {
	_ = os.Remove(planFile(dir, n, ".json"))
	_ = os.Remove(planFile(dir, n, ".nft"))
}

// writeAtomic replaces path with data: a temporary file of mode 0600 in
// the same folder, synced, renamed over path, and the folder synced.
func writeAtomic(path string, data []byte) error {
	return writeAtomicWith(path, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// writeAtomicWith is writeAtomic of what write writes to the file.
func writeAtomicWith(path string, write func(f *os.File) error) error {
	return writeAtomicThen(path, write, nil)
}

// errNotReady: writeAtomicThen's file is not put in place.
var errNotReady = errors.New("not put in place: the file it comes after is not there")

// writeAtomicThen is writeAtomicWith whose file is written and synced,
// then waits for ready (nil: none) before it goes in place; when ready
// says false, path is left as it was.
func writeAtomicThen(path string, write func(f *os.File) error, ready func() bool) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = write(f); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if ready != nil && !ready() {
		return fmt.Errorf("write %s: %w", path, errNotReady)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ReadApplied reads state.json of dir (fs.ErrNotExist when there is none).
func ReadApplied(dir string) (*AppliedState, error) {
	data, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, fmt.Errorf("read the applied tables: %w", err)
	}
	var s AppliedState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dir, "state.json"), err)
	}
	return &s, nil
}

// readAppliedPlan reads plan-N.json of dir (a patch is made into its
// plan with the plan it patches, from its file).
func readAppliedPlan(dir string, n uint64) (*plan.Plan, error) {
	return readAppliedPlanAt(dir, n, 0)
}

func readAppliedPlanAt(dir string, n uint64, depth int) (*plan.Plan, error) {
	path := planFile(dir, n, ".json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the plan of generation %d: %w", n, err)
	}
	p, err := decodePlan(data, depth, func(b uint64, depth int) (*plan.Plan, error) { return readAppliedPlanAt(dir, b, depth) })
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return p, nil
}

// patchBase is the generation whose plan the file of plan n patches (0:
// a whole plan, or no file).
func patchBase(dir string, n uint64) uint64 {
	f, err := os.Open(planFile(dir, n, ".json"))
	if err != nil {
		return 0
	}
	defer f.Close()
	head := make([]byte, 64) // a whole plan may be tens of megabytes: its start says
	k, _ := io.ReadFull(f, head)
	return plan.PatchBase(head[:k])
}

// isNotExist tells a missing file from an unreadable one.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// knownPlan is a plan the caller has at hand (and its JSON and nft text,
// when it has them).
type knownPlan struct {
	n    uint64
	plan *plan.Plan
	raw  []byte
	text []byte
}

// syncApplied writes the files beside the store for the target and table:
// the current and the kept generation, and their plans (known, else from
// the store).
func syncApplied(st *store.Store, t nft.Target, table string, known knownPlan) error {
	gens, err := st.Generations()
	if err != nil {
		return err
	}
	key := targetKey(t)
	s := AppliedState{Target: key, Table: table,
		Current: appliedGenOf(current(gens, key, table)), Kept: appliedGenOf(kept(gens, key, table, 0))}
	return writeApplied(AppliedDir(st.Path(), key, table), s, func(n uint64) (*plan.Plan, []byte, []byte, error) {
		if known.plan != nil && known.n == n {
			return known.plan, known.raw, known.text, nil
		}
		p, err := LoadPlan(st, n)
		return p, nil, nil, err
	})
}
