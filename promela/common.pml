/*
 * common.pml -- definitions shared by the aioctx Promela models.
 *
 * Included by every model with   #include "common.pml"
 * It holds:
 *   - the BH flag bits (the same names and values as impl/src/trace.rs `bh_flags` and QEMU);
 *   - the model encoding of wait timeouts (there is no clock in the models);
 *   - the trace-line macros TRACE0..TRACE3 / TRACEV1..TRACEV4;
 *   - the sequentially consistent notify handshake, shared by notify.pml, bh.pml and
 *     external.pml:  ctx_notify, ctx_notify_accept, ctx_poll, ctx_dispatch.
 *     notify_tso.pml (store buffers) and the three 2015 mirrors (qemu_*.pml) have their own
 *     code and use only the macros of this file.
 *
 * Naming (see README.md for the full table)
 *   globals   = Rust field names: notify_me, notified, notifier, bh_flags, bh_list, poll_started
 *   inlines   = <type>_<method> of the Rust function they model
 *   labels    = impl/src/trace.rs step names, character for character; environment steps start
 *               with env_, store-buffer machinery with tso_; a label starting with end_ is a
 *               Promela valid end state and is only ever stacked on top of a step label
 *   BUG_<X>   = planted bug, the Rust cfg aioctx_bug="<x>"
 *
 * Two Promela rules shape the code below:
 *   - spin rejects a label on the first statement of a { } sequence, and an inline body is one.
 *     Every inline therefore starts with INLINE_ENTRY (a `skip`, shown as [(1)] by spin -p).
 *   - a label may not carry the name of an inline.  The steps ctx_notify_accept, bh_cancel and
 *     bh_delete are both a Rust function and a trace step; ctx_notify_accept() is a
 *     function-like macro forwarding to the inline ctx_notify_accept_seq (a macro is not
 *     expanded in `ctx_notify_accept:` because no `(` follows), and bh_cancel / bh_delete are
 *     single steps written where they are used.
 *
 * Trace lines
 *   Every labelled step prints exactly one line from inside its own atomic step:
 *       @@@ <pid> <label> <key>=<value> ...
 *   Keys are the globals the step read or wrote (value after the step), plus:
 *       <global>_old   the value a read-modify-write step read (bh_flags_old, bh_list_old, ...)
 *       timeout        the poll's timeout after the step: 0 zero, 1 finite, 2 infinite
 *       stale          1 if the step's read returned an older value than memory holds: only
 *                      ctx_poll_compute_timeout, only with -DWEAK_TIMEOUT_READ (notify.pml).
 *                      A trail with stale=1 needs weak memory; a sequentially consistent replay
 *                      of the Rust code cannot take that step (loom can).
 *       ready, readable, blocking, idle, ...   step-local outcomes, 0/1
 *   In a simulation use   spin -T -p ...   (-T: printf output is not indented) and keep the
 *   lines matching ^@@@ .  pan never prints them, so verification speed is not affected.
 */

#ifndef AIOCTX_COMMON_PML
#define AIOCTX_COMMON_PML

/* ---- BH flags (impl/src/trace.rs bh_flags) ---- */
#define BH_PENDING   1   /* on a list: bh_list or the slice a poll is working through */
#define BH_SCHEDULED 2   /* call it when dequeued */
#define BH_ONESHOT   4   /* free after calling (not used by the models) */
#define BH_DELETED   8   /* free without calling */
#define BH_IDLE      16  /* not progress; caps the wait at 10 ms */

/* ---- wait timeouts: a finite timeout may expire at any moment (no clock) ---- */
#define TMO_ZERO     0
#define TMO_FINITE   1
#define TMO_INFINITE 2

/* ---- trace lines ----
 * The format string is built by stringification because Promela has no string concatenation.
 * Arguments are identifiers; never pass a name that is itself a macro as a key. */
#define AIOCTX_STR(s) #s
#define TRACE0(l) \
	printf(AIOCTX_STR(@@@ %d l\n), _pid)
#define TRACEV1(l, k1, v1) \
	printf(AIOCTX_STR(@@@ %d l k1=%d\n), _pid, v1)
#define TRACEV2(l, k1, v1, k2, v2) \
	printf(AIOCTX_STR(@@@ %d l k1=%d k2=%d\n), _pid, v1, v2)
#define TRACEV3(l, k1, v1, k2, v2, k3, v3) \
	printf(AIOCTX_STR(@@@ %d l k1=%d k2=%d k3=%d\n), _pid, v1, v2, v3)
#define TRACEV4(l, k1, v1, k2, v2, k3, v3, k4, v4) \
	printf(AIOCTX_STR(@@@ %d l k1=%d k2=%d k3=%d k4=%d\n), _pid, v1, v2, v3, v4)
/* short forms: the key is the variable's own name */
#define TRACE1(l, a)       TRACEV1(l, a, a)
#define TRACE2(l, a, b)    TRACEV2(l, a, a, b, b)
#define TRACE3(l, a, b, c) TRACEV3(l, a, a, b, b, c, c)

#define INLINE_ENTRY skip

/*
 * =====================================================================================
 * The sequentially consistent notify handshake (notify.pml, bh.pml, external.pml).
 * The including model declares:
 *     byte notify_me; bool notified; bool notifier; bool bh_list;
 * and defines two hooks:
 *     inline ctx_compute_timeout(tmo, may_miss)   body of the step ctx_poll_compute_timeout
 *                                                 (runs inside its atomic; prints the line);
 *                                                 may_miss: a stale read is possible here
 *                                                 (only with -DWEAK_TIMEOUT_READ)
 *     inline ctx_poll_scan()                      the work scan after accept (BHs)
 * Fences are SC no-ops here but are kept as steps so that traces name them.
 * =====================================================================================
 */

/*
 * AioContext::notify (impl/src/notify.rs), any thread.
 * nm, was: caller's scratch locals (byte, bool), left at 0.
 */
inline ctx_notify(nm, was)
{
	INLINE_ENTRY;
	ctx_notify_release_fence: TRACE0(ctx_notify_release_fence);
#ifdef BUG_SKIP_EVENT_WHEN_NOTIFIED
	/* planted: remember whether notified was already set, to skip the eventfd write */
	ctx_notify_set_notified: atomic {
		was = notified; notified = true;
		TRACEV2(ctx_notify_set_notified, notified_old, was, notified, notified)
	};
#else
	ctx_notify_set_notified: atomic { notified = true; TRACE1(ctx_notify_set_notified, notified) };
#endif
	ctx_notify_fence: TRACE0(ctx_notify_fence);
	ctx_notify_read_notify_me: atomic {
		nm = notify_me; TRACE1(ctx_notify_read_notify_me, notify_me)
	};
	if
#ifdef BUG_SKIP_EVENT_WHEN_NOTIFIED
	:: nm != 0 && !was ->
#else
	:: nm != 0 ->
#endif
		ctx_notify_event_set: atomic {
			notifier = true; nm = 0; was = false; TRACE1(ctx_notify_event_set, notifier)
		}
	:: else -> nm = 0; was = false
	fi
}

/*
 * AioContext::notify_accept, home thread.  Does not touch the eventfd.
 * Called as ctx_notify_accept() (macro, see the header).
 */
inline ctx_notify_accept_seq()
{
	INLINE_ENTRY;
	ctx_notify_accept: atomic { notified = false; TRACE1(ctx_notify_accept, notified) };
	ctx_notify_accept_fence: TRACE0(ctx_notify_accept_fence)
}
#define ctx_notify_accept() ctx_notify_accept_seq()

/*
 * The notifier's read handler and the work scan, in the order poll and the external loop's
 * dispatch run them.  readable: the wait reported the notifier fd readable.
 *
 * Correct order: drain the eventfd, then scan.  A notify that lands after the drain keeps the
 * eventfd set for any other poller armed in notify_me; one that lands before it published its
 * work before, and the scan sees it.
 * BUG_DRAIN_AFTER_SCAN (not in the brief's list, see README "Findings"): scan, then drain --
 * QEMU's order (docs/protocol.md §7.2: "run BHs, then ready handlers"); a temporary poller then
 * eats the kick meant for an external loop sleeping in its own wait (external.pml).
 */
inline ctx_dispatch(readable)
{
	INLINE_ENTRY;
#ifdef BUG_DRAIN_AFTER_SCAN
	ctx_poll_scan();
#endif
	if
	:: readable ->
		ctx_poll_event_drain: atomic {
			notifier = false; readable = false; TRACE1(ctx_poll_event_drain, notifier)
		}
	:: else -> skip
	fi;
#ifndef BUG_DRAIN_AFTER_SCAN
	ctx_poll_scan()
#endif
}

/*
 * AioContext::poll(true) (impl/src/ctx.rs), home thread, one call.
 * tmo: byte; armed, readable: bool; caller's locals, 0 on entry and on exit.
 *
 * BUG_POLL_NO_RECHECK_NOTIFIED: notified is not re-read after notify_me += 2.
 * BUG_ACCEPT_AFTER_SCAN:        notify_accept runs after the work scan.
 */
inline ctx_poll(tmo, armed, readable)
{
	INLINE_ENTRY;
	ctx_poll_compute_timeout: atomic { ctx_compute_timeout(tmo, true) };

	/* userspace polling with notify_me == 0: only with a non-zero budget; the notifier's
	 * io_poll reads notified, and seeing it ends polling (timeout 0) without being progress.
	 * The empty branch: polling is off, or the budget ran out before anything was seen. */
	if
	:: tmo != TMO_ZERO ->
		ctx_poll_userspace: atomic {
			if
			:: notified -> tmo = TMO_ZERO
			:: else -> skip
			fi;
			TRACEV2(ctx_poll_userspace, notified, notified, timeout, tmo)
		}
	:: true -> skip
	fi;

	/* about to block: announce it, then look at notified again */
	if
	:: tmo != TMO_ZERO ->
		ctx_poll_notify_me_add: atomic {
			notify_me = notify_me + 2; armed = true; TRACE1(ctx_poll_notify_me_add, notify_me)
		};
		ctx_poll_fence: TRACE0(ctx_poll_fence);
#ifndef BUG_POLL_NO_RECHECK_NOTIFIED
		ctx_poll_recheck_notified: atomic {
			if
			:: notified -> tmo = TMO_ZERO
			:: else -> skip
			fi;
			TRACEV2(ctx_poll_recheck_notified, notified, notified, timeout, tmo)
		}
#else
		skip
#endif
	:: else -> skip
	fi;

	/* the fd monitor wait.  With timeout 0 the call may be skipped altogether
	 * (docs/protocol.md §6.1: no syscall when nothing but the context's own notifier is
	 * registered) or be a zero-timeout check.  end_idle_wait: sleeping here with nothing to
	 * do is a valid end state. */
	if
	:: tmo == TMO_ZERO -> skip
	:: true ->
end_idle_wait:
ctx_poll_wait:
		atomic {
			(tmo != TMO_INFINITE || notifier) ->
			readable = notifier;
			TRACEV3(ctx_poll_wait, notifier, notifier, timeout, tmo, readable, readable);
			tmo = TMO_ZERO
		}
	fi;

	if
	:: armed ->
		ctx_poll_notify_me_sub: atomic {
			notify_me = notify_me - 2; armed = false; TRACE1(ctx_poll_notify_me_sub, notify_me)
		}
	:: else -> skip
	fi;

#ifndef BUG_ACCEPT_AFTER_SCAN
	ctx_notify_accept();
#endif
	ctx_dispatch(readable);
#ifdef BUG_ACCEPT_AFTER_SCAN
	ctx_notify_accept();
#endif
}

#endif /* AIOCTX_COMMON_PML */
