// Package store keeps the observed egress baseline in a bbolt file.
//
// The bucket tree:
//
//	meta/
//	    schema   -> "8"                    decimal schema version
//	    created  -> RFC 3339 time          when the file was made
//	    obs_unrecorded -> {drop, audit, records}                  (since v3)
//	        packets the monitor counted without a stored destination:
//	        past its bound between flushes, or the observations' bound
//	    approvals_epoch -> <count:8>                               (since v8)
//	        the writes that un-approved a flow, 1 in a new file: a
//	        generation's approvals_epoch equal to it says every flow of
//	        that generation's plan is still approved (approvalsepoch.go)
//	flows/
//	    <uid:4><proto:1><ip:16><port:2>   -> Flow JSON
//	        hits, first_seen, last_seen, hostnames, processes, cgroups,
//	        comms, presented, approval; processes are executables' names,
//	        comms [{exe, comm}] the process names that differ from them (a
//	        field added in v4 without a migration: older records have
//	        comms in processes and no comms list, and read as such);
//	        presented the names sent as TLS SNI or HTTP Host (added
//	        without a migration: older records have none)
//	dns/
//	    <ip:16>                           -> DNSEntry JSON
//	        names: [{name, ttl, first_seen, last_seen, uids}]
//	        At most MaxDNSAddresses keys; meta/dns_count (made from the
//	        bucket the first time it is missing), meta/dns_unrecorded
//	        (observations of new addresses that found no room)
//	runs/
//	    <id:8, big endian>                -> Run JSON
//	        start, end, cgroup, events, lost_events, dns_answers, finished,
//	        dns_unrecorded, flows_unrecorded (what found no room)
//	generations/                                               (since v2)
//	    <n:8>                             -> Generation JSON
//	        time, target, table, mode, staged uids, command, reason,
//	        state (applying, applied, pending, confirmed, rolled-back,
//	        failed), restores, plan_base (since v6), deadline,
//	        confirm_within_ns, rollback_to,
//	        guard_pid, guard_boot (the boot id the guard runs in), note,
//	        approvals_epoch (since v8: meta/approvals_epoch in the write
//	        that recorded it with every flow of its plan approved)
//	plans/                                                     (since v2)
//	    <n:8>                             -> gzip of the generation's plan,
//	        or (since v6) of a patch of the plan of generation plan_base
//	        ({"patch": {"base", "head", "added", "removed", "sum"...}}:
//	        what a delta apply changed; rollout.LoadPlan makes the plan)
//	        kept for the newest keep_generations generations, the current
//	        one and rollback targets; the others are pruned to:
//	plan_summaries/                                            (since v3)
//	    <n:8>                             -> {bytes, sha256, pruned}
//	observations/                                              (since v2)
//	    <kind:1 'd'|'a'><flow key:23>     -> {hits, first_seen, last_seen, services (optional, at most 8)}
//	        packets the default rule dropped or logged, from the monitor;
//	        at most Options.MaxObservations keys (the lightest give way)
//	denials/                                                   (since v2)
//	    <unix minute:8>                   -> {drop, audit} packet counts
//	watches/                                                   (since v4)
//	    <id:8>                            -> Watch JSON
//	        a run of the monitor: start, end (its last flush), target,
//	        group, unrecorded, lost_logs, unlogged_audit, unlogged_drop,
//	        counters, finished; what it logged until end is recorded.
//	        At most MaxWatches runs (the oldest go)
//	questions/                                                 (since v5)
//	    <uid:4><name>                     -> Question JSON
//	        every question a user asked while learning: hits, qtypes,
//	        rcodes (answer code -> count, NXDOMAIN included), first_seen,
//	        last_seen. At most MaxQuestions names; meta/questions_count,
//	        meta/questions_unrecorded (what found no room)
//	dns_denials/                                               (since v5)
//	    <uid:4><name>                     -> DNSDenial JSON
//	        names the DNS policy stopped (enforce) or audited: hits,
//	        dropped, malformed, first_seen, last_seen. At most
//	        MaxDNSDenialNames names; meta/dns_denials_count,
//	        meta/dns_denials_unrecorded
//	refusals/                                                  (since v7)
//	    <flow key:23><name presented>     -> {kind, verdict, dropped, audited, first_seen, last_seen}
//	        connections the name check refused; at most MaxRefusals keys
//	        (refusals of new keys past it are counted, not kept)
//	    ~unrecorded                       -> <count:8> those left out
//
// Keys are fixed-width and big endian, so a cursor walks flows ordered by
// UID, then protocol, address and port. Addresses are 16 bytes: IPv4 is
// stored IPv4-mapped (::ffff:a.b.c.d) and returned unmapped.
//
// Sharing the file. bbolt takes an exclusive lock on the file for as long as
// a writer keeps it open, and a reader would wait on it for ever. So nobody
// keeps the file open: every operation opens it, runs one transaction and
// closes it. A learner writes a batch every few seconds, holding the lock for
// a few milliseconds; a reader (a report, the enforcer) takes a shared lock
// for the time it copies what it needs. Both wait for the other with a
// bounded timeout; a learner that cannot get the lock keeps its batch in
// memory and tries again at the next flush.
//
// Beside the file. The enforcer keeps two things next to the store, outside
// bbolt: <file>.lock, an flock that puts every change of a table in one
// order (apply, confirm, rollback, restore, the guard's rollback), and
// <file>.applied/<table>@<target>/, the current and the kept generation
// with their plans as JSON and nft text, which restore reads when this
// file cannot be read (see rollout.AppliedDir).
//
// Retention. Prune deletes observations not seen within the retention
// (default 90 days), older per-minute denials, denied DNS names not seen
// within it, and learning and monitor runs that ended before it; flows,
// DNS names, questions and generation records are the baseline and its
// history, and stay. bbolt reuses the freed pages,
// so a store that is pruned regularly stops growing (retention.go).
//
// Schema versions. meta/schema holds the version of the layout. Opening a
// file for writing runs the migrations from its version up to SchemaVersion
// in one transaction; a file newer than this binary is refused, for reading
// and writing, with a message that says so.
package store
