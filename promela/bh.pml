/*
 * bh.pml -- bottom halves: schedule / cancel / delete from another thread against poll.
 *
 * What it models
 *   impl/src/bh.rs   Bh::schedule, Bh::schedule_idle   inline bh_schedule(new_flags, ...):
 *                        old = flags.fetch_or(PENDING | new); push on bh_list if PENDING was
 *                        clear; always notify
 *                    Bh::cancel                        step bh_cancel: flags.fetch_and(!SCHEDULED),
 *                                                      no notify
 *                    Drop of the owner's handle        enqueue(DELETED) (docs/protocol.md §4),
 *                                                      the same inline with step bh_delete:
 *                                                      flags.fetch_or(PENDING | DELETED), push if
 *                                                      PENDING was clear, notify
 *                    AioContext::poll_bhs              hook ctx_poll_scan: take the whole list,
 *                        then per BH f = flags.fetch_and(!(PENDING|SCHEDULED|IDLE)); call it if
 *                        SCHEDULED and not DELETED
 *   impl/src/notify.rs, impl/src/ctx.rs: notify and poll(true) from common.pml; compute_timeout
 *   reads the BH: 0 if it is on the list SCHEDULED, not DELETED, not IDLE; finite (10 ms) if
 *   it is IDLE; with the model option WEAK_TIMEOUT_READ it may miss the BH altogether (a stale
 *   read before the arming fence, see notify.pml).
 *   Processes: home_thread (poll loop; the callback may reschedule its own BH once, which must
 *   run in the NEXT poll); env_owner (another thread: any sequence of schedule, schedule_idle,
 *   cancel; it may end with delete, its last use of the handle: the deleted BH is pushed and the
 *   loop dequeues it without calling it, as the implementation frees it there); env_watchdog.
 *   One BH.  bh_slice marks it in the snapshot the poll is working through.
 *
 * Properties
 *   p_no_lost_wakeup  a BH that is SCHEDULED and not DELETED eventually stops being so: it is
 *                     called (dequeued with SCHEDULED) or cancelled.
 *   p_no_busy_loop    once env_owner has stopped, the home thread eventually sleeps for good.
 *   safety            assertions: a BH is never pushed while on the list or in a slice; a BH is
 *                     never called by a dequeue that came after its delete; env_watchdog: when
 *                     nothing can move, no live scheduled BH is waiting; invalid end states.
 *
 * Variants (ci/spin reads the next line; a+b means -Da -Db; a variant without BUG_ must pass)
 *   @variants correct WEAK_TIMEOUT_READ BUG_POLL_NO_RECHECK_NOTIFIED BUG_ACCEPT_AFTER_SCAN+WEAK_TIMEOUT_READ
 *   None of the listed planted bugs lives in the BH code itself.  The two handshake bugs of
 *   notify.pml are run here too, to show they lose a real BH schedule (same mechanism, see
 *   notify.pml):
 *   BUG_POLL_NO_RECHECK_NOTIFIED  hang: a schedule lands during polling.  p_no_lost_wakeup, safety.
 *   BUG_ACCEPT_AFTER_SCAN         hang: a schedule lands between the scan and the accept
 *                                 (needs WEAK_TIMEOUT_READ).  p_no_lost_wakeup, safety.
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] [-DWEAK_TIMEOUT_READ] bh.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-D...] bh.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

byte notify_me;
bool notified;
bool notifier;
bool bh_list;          /* the BH is on the context's atomic list */
byte bh_flags;         /* BH_* bits */
bool bh_slice;         /* model: the BH is in the snapshot a poll is working through */
bool ghost_bh_deleted; /* model: bh_delete has happened */
bool env_done;

#define bh_live_scheduled ((bh_flags & (BH_SCHEDULED | BH_DELETED)) == BH_SCHEDULED)

/* hook: the step ctx_poll_compute_timeout */
inline ctx_compute_timeout(tmo, may_miss)
{
	if
	:: bh_list && bh_live_scheduled && (bh_flags & BH_IDLE) -> tmo = TMO_FINITE
	:: bh_list && bh_live_scheduled && !(bh_flags & BH_IDLE) -> tmo = TMO_ZERO
	:: else -> tmo = TMO_INFINITE
	fi;
#ifdef WEAK_TIMEOUT_READ
	if
	:: may_miss && tmo != TMO_INFINITE -> tmo = TMO_INFINITE   /* stale read (notify.pml) */
	:: true -> skip
	fi;
#endif
	TRACEV4(ctx_poll_compute_timeout, bh_list, bh_list, bh_flags, bh_flags,
	        stale, (bh_list && bh_live_scheduled && tmo == TMO_INFINITE), timeout, tmo)
}

/*
 * enqueue(new_flags) (impl/src/bh.rs `enqueue`): Bh::schedule (new_flags = BH_SCHEDULED),
 * Bh::schedule_idle (BH_SCHEDULED | BH_IDLE) and the owner's drop (BH_DELETED, step bh_delete).
 * old, nm: byte scratch; was: bool scratch; all left at 0.
 */
inline bh_schedule(new_flags, old, nm, was)
{
	INLINE_ENTRY;
	if
	:: new_flags & BH_DELETED ->
		bh_delete: atomic {
			old = bh_flags; bh_flags = bh_flags | BH_PENDING | new_flags; ghost_bh_deleted = true;
			TRACEV2(bh_delete, bh_flags_old, old, bh_flags, bh_flags)
		}
	:: else ->
		bh_schedule_flags: atomic {
			old = bh_flags; bh_flags = bh_flags | BH_PENDING | new_flags;
			TRACEV2(bh_schedule_flags, bh_flags_old, old, bh_flags, bh_flags)
		}
	fi;
	if
	:: !(old & BH_PENDING) ->
		bh_schedule_push: atomic {
			assert(!bh_list && !bh_slice);    /* never on a list twice */
			bh_list = true; old = 0;
			TRACE1(bh_schedule_push, bh_list)
		}
	:: else -> old = 0
	fi;
	ctx_notify(nm, was)
}

/* hook: AioContext::poll_bhs for the single BH.  Uses home_thread's locals f, resched. */
inline ctx_poll_scan()
{
	INLINE_ENTRY;
	bh_poll_take: atomic {
		bh_slice = bh_list; bh_list = false;
		TRACEV2(bh_poll_take, bh_list_old, bh_slice, bh_list, bh_list)
	};
	if
	:: bh_slice ->
		bh_poll_dequeue: atomic {
			f = bh_flags;
			bh_flags = bh_flags & ~(BH_PENDING | BH_SCHEDULED | BH_IDLE);
			bh_slice = false;
			deleted_before = ghost_bh_deleted;
			TRACEV2(bh_poll_dequeue, bh_flags_old, f, bh_flags, bh_flags)
		};
		if
		:: (f & BH_SCHEDULED) && !(f & BH_DELETED) ->
			bh_poll_call: atomic {
				assert(!deleted_before);    /* a deleted BH is never called */
				TRACEV1(bh_poll_call, idle, (f & BH_IDLE) != 0);
				f = 0; deleted_before = false
			};
			/* the callback may schedule its own BH again (once): it must run in the next poll */
			if
			:: resched > 0 && !ghost_bh_deleted ->
				env_callback_resched: atomic { resched--; TRACE0(env_callback_resched) };
				bh_schedule(BH_SCHEDULED, old, nm, was)
			:: else -> skip
			fi
		:: else -> f = 0; deleted_before = false
		fi
	:: else -> skip
	fi
}

active proctype home_thread()
{
	byte tmo, f, old, nm;
	bool armed, readable, was, deleted_before;
	byte resched = 1;

	do
	:: true -> ctx_poll(tmo, armed, readable)
	od
}

active proctype env_owner()
{
	byte old, nm, newf;
	bool was;

	do
	:: true ->
		if
		:: newf = BH_SCHEDULED
		:: newf = BH_SCHEDULED | BH_IDLE
		:: newf = BH_DELETED            /* the drop: its last use of the handle */
		fi;
		bh_schedule(newf, old, nm, was);
		if
		:: newf == BH_DELETED -> break
		:: else -> newf = 0
		fi
	:: true ->
		bh_cancel: atomic {
			old = bh_flags; bh_flags = bh_flags & ~BH_SCHEDULED;
			TRACEV2(bh_cancel, bh_flags_old, old, bh_flags, bh_flags);
			old = 0
		}
	:: true -> break
	od;
	env_owner_stop: atomic { env_done = true; TRACE1(env_owner_stop, env_done) }
}

active proctype env_watchdog()
{
	env_watchdog_hang: atomic {
		timeout -> TRACE2(env_watchdog_hang, bh_list, bh_flags); assert(!bh_live_scheduled)
	}
}

ltl p_no_lost_wakeup { [] (bh_live_scheduled -> <> !bh_live_scheduled) }
ltl p_no_busy_loop   { [] (env_done -> <> [] !(home_thread@ctx_poll_compute_timeout)) }
