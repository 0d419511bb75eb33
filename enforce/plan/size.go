package plan

// The sizes a plan's JSON and nft script will about have, so that their
// buffers are made once: a 100,000-element plan's JSON is some 27 MB and
// its script 17 MB, and a buffer grown by doubling copies and faults in
// as much again.

// jsonSize is about the size of p.JSON.
func (p *Plan) jsonSize(head int) int {
	n := head
	for _, s := range p.Sets {
		for i := range s.Elements {
			e := &s.Elements[i]
			n += 96 + len(e.Service) + len(e.User) + len(e.Comment) + stringsSize(e.Hosts) + stringsSize(e.Names)
		}
	}
	if p.Follow != nil {
		for i := range p.Follow.Rules {
			r := &p.Follow.Rules[i]
			n += 64 + len(r.User) + len(r.Name) + len(r.Source)
		}
	}
	return n
}

// textSize is about the size of p.Text's script.
func (p *Plan) textSize() int {
	n := 64 << 10 // the header, the rules and the small sets
	for _, s := range p.Sets {
		for i := range s.Elements {
			e := &s.Elements[i]
			n += 56 + len(e.Service) + len(e.Comment)
		}
	}
	if p.Follow != nil {
		for i := range p.Follow.Rules {
			r := &p.Follow.Rules[i]
			n += 32 + len(r.Name) + len(r.Source)
		}
	}
	return n
}

func stringsSize(list []string) int {
	n := 0
	for _, s := range list {
		n += len(s) + 3
	}
	return n
}

// JSONSize is about the size of p.JSON's encoding (less its head, a few
// KB): what a buffer of its packing is sized by.
func (p *Plan) JSONSize() int { return p.jsonSize(0) }
