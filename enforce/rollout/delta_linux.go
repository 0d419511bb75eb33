//go:build linux

package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"

	"github.com/egresskit/egress/enforce/nft"
	"github.com/egresskit/egress/enforce/plan"
	"github.com/egresskit/egress/internal/mapfile"
	"github.com/egresskit/egress/internal/phase"
	"github.com/egresskit/egress/store"
)

// A delta apply needs the index of the plan the kernel holds: apply writes
// each plan's index beside its files (index-N.bin, plan.Index.Encode),
// and reads the current generation's back. A generation applied as a delta
// stores its plan as a patch of the plan before (store.Generation.PlanBase;
// plan-N.json holds the patch, plan-N.nft the nft script of the changes),
// at most maxPatchDepth patches deep: then the whole plan is stored again.

// maxPatchDepth bounds the patches between a stored plan and a whole one
// (each costs a decode when the plan is read back).
const maxPatchDepth = 8

// maxPlanChain bounds the patches LoadPlan follows (a damaged store could
// hold a loop).
const maxPlanChain = 64

func indexFile(dir string, n uint64) string {
	return filepath.Join(dir, "index-"+strconv.FormatUint(n, 10)+".bin")
}

// deltaBase is what a delta apply starts from: the plan generation the
// store says the kernel holds, its index, and how many patches deep its
// stored plan is; or why there is none.
type deltaBase struct {
	gen    uint64
	index  *plan.Index
	depth  int
	reason string
}

// baseFor finds the delta base of table in target t.
func baseFor(st *store.Store, t nft.Target, table string) deltaBase {
	gens, err := st.Generations()
	if err != nil {
		return deltaBase{reason: "the generations could not be read: " + err.Error()}
	}
	cur := current(gens, targetKey(t), table)
	switch {
	case cur == nil:
		return deltaBase{reason: "no table was applied before"}
	case cur.Mode == ModeRemoved:
		return deltaBase{reason: "the table was removed"}
	case !cur.Kept():
		return deltaBase{reason: "generation " + strconv.FormatUint(cur.N, 10) + " is " + cur.State}
	}
	b := deltaBase{gen: cur.Effective()}
	b.index, err = readIndexFile(indexFile(AppliedDir(st.Path(), targetKey(t), table), b.gen))
	if err != nil {
		return deltaBase{reason: "no index of generation " + strconv.FormatUint(b.gen, 10) + "'s plan beside the store (" + err.Error() + ")"}
	}
	for n := b.gen; n != 0 && b.depth <= maxPatchDepth; b.depth++ {
		g := find(gens, n)
		if g == nil {
			break
		}
		n = g.PlanBase
	}
	return b
}

// readIndexFile decodes the index file at path from a read-only mapping
// of it (plan.DecodeIndex copies what it keeps): at 100k elements, 4.8 MB
// not copied into fresh memory of the heap (1.2k page faults). A file cut
// short while it is read (a fault in the mapping) is an error.
func readIndexFile(path string) (x *plan.Index, err error) {
	data, unmap, err := mapfile.ReadOnly(path)
	if err != nil {
		return nil, err
	}
	defer unmap()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			x, err = nil, fmt.Errorf("read %s: %v", path, r)
		}
	}()
	return plan.DecodeIndex(data)
}

// writeIndex writes index x of generation n's plan beside the store: a
// cache (without it, the next apply replaces the table), named by nothing:
// the next apply reads the index of the generation the store says is
// current. With patched (a delta's patch sums x.Encode, made once), the
// encoded index is written; else it is written as it is encoded, never
// whole in memory.
func writeIndex(dir string, n uint64, x *plan.Index, patched bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if patched {
		return writeAtomic(indexFile(dir, n), x.Encode())
	}
	return writeAtomicWith(indexFile(dir, n), func(f *os.File) error { return x.WriteEncoded(f) })
}

// patched is a generation applied as a delta, stored as a patch.
type patched struct {
	patch  *plan.Patch
	json   []byte
	packed []byte
	text   []byte
}

// patchOf makes the patch of p, applied as delta d from base b as
// generation n, and its files' contents.
func patchOf(b deltaBase, p *plan.Plan, x *plan.Index, d *plan.Delta, n uint64) (*patched, error) {
	pt := plan.MakePatch(b.gen, b.index, p, x, d)
	out := &patched{patch: pt}
	var err error
	if out.json, err = pt.JSON(); err != nil {
		return nil, err
	}
	if out.packed, err = store.PackPlan(out.json); err != nil {
		return nil, err
	}
	var text bytes.Buffer
	title := fmt.Sprintf("Generation %d, applied as a delta: these changes make the table of generation %d above the table of generation %d.", n, b.gen, n)
	if err := d.Script(&text, p, title); err != nil {
		return nil, err
	}
	out.text = text.Bytes()
	return out, nil
}

// writePatchFiles writes the files of a generation stored as a patch:
// plan-N.json holds the patch, plan-N.nft the script of its base (copied:
// it is whole on its own) followed by the changes, so "nft -f" of it alone
// gives the table in one transaction. Without the base's script, the whole
// plan's is rendered.
func (a *applying) writePatchFiles(pt *patched) error {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return err
	}
	head := fmt.Sprintf("#!/usr/sbin/nft -f\n# Generation %d: the table of generation %d, then the changes that make it generation %d's.\n",
		a.n, a.base.gen, a.n)
	err := writeAtomicWith(planFile(a.dir, a.n, ".nft"), func(f *os.File) error {
		base, err := os.Open(planFile(a.dir, a.base.gen, ".nft"))
		if err != nil {
			return err
		}
		defer base.Close()
		if _, err := f.WriteString(head); err != nil {
			return err
		}
		if _, err := io.Copy(f, base); err != nil { // copy_file_range: the kernel copies
			return err
		}
		_, err = f.Write(pt.text)
		return err
	})
	if err != nil {
		var text bytes.Buffer
		if terr := a.p.Text(&text); terr != nil {
			return errors.Join(err, terr)
		}
		if err := writeAtomic(planFile(a.dir, a.n, ".nft"), text.Bytes()); err != nil {
			return err
		}
	}
	return writeAtomic(planFile(a.dir, a.n, ".json"), pt.json)
}

// decodePlan reads stored plan bytes: a plan, or a patch of the plan that
// base gives (at most maxPlanChain deep).
func decodePlan(data []byte, depth int, base func(n uint64, depth int) (*plan.Plan, error)) (*plan.Plan, error) {
	if !plan.IsPatch(data) {
		var p plan.Plan
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, err
		}
		return &p, nil
	}
	pt, err := plan.DecodePatch(data)
	if err != nil {
		return nil, err
	}
	if depth >= maxPlanChain {
		return nil, errors.New("a chain of plan patches too long")
	}
	bp, err := base(pt.Base, depth+1)
	if err != nil {
		return nil, fmt.Errorf("the plan it patches, of generation %d: %w", pt.Base, err)
	}
	return plan.ApplyPatch(bp, pt)
}

// applying is one apply of plan p as generation n: a delta from base when
// one takes the kernel's table to p's, else a replace, whose whole plan is
// rendered (JSON, packed, and the nft script) while the kernel works.
type applying struct {
	k     nft.Kernel
	p     *plan.Plan
	n     uint64
	dir   string
	base  deltaBase
	index *plan.Index // p's (nil when there is no base: startEarly makes it)
	delta *plan.Delta // nil: a replace
	why   string      // why no delta was tried
	whole *rendered   // the whole plan's renderings, when stored whole
	patch *patched    // the patch, after a delta
	early *early      // the index's file, and the patch and its files, made while the kernel works
	res   *nft.ApplyResult
}

// early is the work startApplying starts beside the kernel's: the file of
// the plan's index (a replace needs it too), and with a delta, its patch
// and the patch's files (named by state.json only once the generation is
// recorded; a replace after all writes the whole plan's over them).
type early struct {
	made, done         chan struct{} // the patch is made; all is done
	patch              *patched
	indexErr, patchErr error
	filesErr           error // the patch's files'
}

// startEarly starts a's early work in a goroutine of its own.
func (a *applying) startEarly(index <-chan *plan.Index) {
	e := &early{made: make(chan struct{}), done: make(chan struct{})}
	a.early = e
	delta := a.delta != nil && a.whole == nil
	go func() {
		defer close(e.done)
		var wg sync.WaitGroup
		wg.Go(func() {
			x := a.index
			if x == nil { // a replace: made beside the kernel's work
				x = <-index
			}
			e.indexErr = writeIndex(a.dir, a.n, x, delta)
			phase.Mark("index written (beside)")
		})
		if delta {
			e.patch, e.patchErr = patchOf(a.base, a.p, a.index, a.delta, a.n)
		}
		phase.Mark("patch made (beside)")
		close(e.made) // the store may record the patch while its files are written
		if e.patch != nil {
			e.filesErr = a.writePatchFiles(e.patch)
			phase.Mark("patch files written (beside)")
		}
		wg.Wait()
	}()
}

// wait waits for the early work (none: nothing to wait for).
func (e *early) wait() *early {
	if e != nil {
		<-e.done
	}
	return e
}

// patchMade waits until the patch is made (or not).
func (e *early) patchMade() *early {
	<-e.made
	return e
}

// startApplying decides how to apply p: a delta when the base is known and
// a delta takes its table to p's; the whole plan's renderings start at once
// when the plan is stored whole (a replace, or a chain of patches as deep
// as maxPatchDepth).
// index gives p's index (indexOf), read once.
func startApplying(k nft.Kernel, p *plan.Plan, o Options, n uint64, base deltaBase, index <-chan *plan.Index) *applying {
	a := &applying{k: k, p: p, n: n, dir: AppliedDir(o.Store.Path(), targetKey(k.Target()), p.Table), base: base,
		why: base.reason}
	if base.index != nil {
		a.index = <-index
		d, err := plan.DeltaOf(base.index, a.index, p)
		if err != nil {
			a.why = err.Error()
		} else {
			a.delta = d
		}
	}
	if a.delta == nil || base.depth >= maxPatchDepth {
		a.whole = render(p, a.dir, n)
	}
	a.startEarly(index)
	return a
}

// indexOf makes p's index in a goroutine of its own, beside the store's
// reads and writes before the kernel's work: a delta needs it first, a
// replace writes it.
func indexOf(p *plan.Plan) <-chan *plan.Index {
	ch := make(chan *plan.Index, 1)
	go func() { ch <- plan.IndexOf(p); phase.Mark("index made (beside)") }()
	return ch
}

// apply applies the plan: with the delta when there is one (the kernel
// replaces the table when its table is not the base's).
func (a *applying) apply() (*nft.ApplyResult, error) {
	o := nft.ApplyOptions{Generation: a.n}
	if a.delta != nil {
		o.From, o.FromGeneration, o.Delta = a.base.index, a.base.gen, a.delta
	}
	res, err := a.k.ApplyWith(a.p, o)
	if res != nil && res.Delta == nil && res.FullReason == "" {
		res.FullReason = a.why
	}
	a.res = res
	return res, err
}

// packed is the plan to store, packed: the patch after a delta (unless
// the plan is stored whole), else the whole plan.
func (a *applying) packed(log interface{ Error(string, ...any) }) []byte {
	if a.res != nil && a.res.Delta != nil && a.whole == nil {
		e := a.early.patchMade()
		if e.patch != nil {
			a.patch = e.patch
			return e.patch.packed
		}
		log.Error("generation "+strconv.FormatUint(a.n, 10)+": its patch could not be made; the whole plan is stored", "err", e.patchErr)
	}
	a.early.wait()      // before a replace's files overwrite the patch's
	if a.whole == nil { // the kernel replaced the table after all
		a.whole = render(a.p, a.dir, a.n)
	}
	<-a.whole.packedDone
	if a.whole.err != nil {
		log.Error("generation "+strconv.FormatUint(a.n, 10)+": its plan could not be encoded for the store", "err", a.whole.err)
	}
	return a.whole.packed
}

// planBase is the generation whose plan the stored one patches (0: whole).
func (a *applying) planBase() uint64 {
	if a.patch != nil {
		return a.base.gen
	}
	return 0
}

// discard removes the files of a generation the kernel refused.
func (a *applying) discard() {
	if a.whole != nil {
		<-a.whole.done
	}
	a.early.wait()
	removePlanFiles(a.dir, a.n)
	_ = os.Remove(indexFile(a.dir, a.n))
}

// writeFiles writes the files beside the store: the patch's (the whole
// plan's were written while the kernel worked), the plan's index, then
// state.json naming them.
func (a *applying) writeFiles(st *store.Store, log interface{ Error(string, ...any) }) {
	known := knownPlan{n: a.n, plan: a.p}
	e := a.early.wait()
	var errs []error
	if a.patch != nil {
		errs = append(errs, e.filesErr)
	} else if a.whole != nil {
		<-a.whole.done // its files are written (or, when they could not be, made again from the plan)
		errs = append(errs, a.whole.filesErr)
	}
	errs = append(errs, e.indexErr)
	errs = append(errs, syncApplied(st, a.k.Target(), a.p.Table, known))
	if err := errors.Join(errs...); err != nil {
		log.Error("generation "+strconv.FormatUint(a.n, 10)+" is applied, but the files restore falls back on are not all written", "err", err)
	}
}
