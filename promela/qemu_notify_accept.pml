/*
 * qemu_notify_accept.pml -- mirror of QEMU's docs/spin/aio_notify_accept.promela (2015,
 * commit 05e514b1d4 "optimize clearing the EventNotifier", bug-history B3): the notified flag
 * and an accept that exchanges it.  Written afresh.
 *
 * What it models (2015 protocol; labels not checked against impl/src/trace.rs)
 *   env_notifier  publish work; if notify_me != 0: write the eventfd, then set notified.
 *   home_thread, temp_waiter  aio_poll(true) of 2015 with aio_notify_accept: notify_me += 2;
 *       if no work is pending, sleep until the eventfd is set (the wait does not clear it);
 *       notify_me -= 2; accept: atomically read and clear notified, and clear the eventfd only
 *       if notified was set; take the work.  temp_waiter may stop after any call.
 *   env_watchdog  fires when nothing can move.
 *
 * Properties
 *   p_no_lost_wakeup  [] (bh_list -> <> !bh_list)
 *   p_no_busy_loop    once the notifier has stopped, both waiters eventually stop starting new
 *                     calls: a waiter whose eventfd stays set never sleeps again.
 *   safety            env_watchdog: no work pending when nothing can move; invalid end states.
 *
 * Variants (ci/spin reads the next line; a variant without BUG_ must pass)
 *   @variants correct BUG_NOTIFIED_BEFORE_EVENT BUG_SKIP_EVENT_WHEN_NOTIFIED
 *   BUG_NOTIFIED_BEFORE_EVENT  busy loop.  notified is set before the eventfd write; a waiter
 *       accepts in between (exchanges notified, clears the eventfd), then the write lands: the
 *       eventfd stays set with notified clear, no accept ever clears it again, every wait
 *       returns at once.  Caught by p_no_busy_loop only (the work is still taken).
 *   BUG_SKIP_EVENT_WHEN_NOTIFIED  hang.  The notifier skips the eventfd write when notified is
 *       already set; an accept racing with it clears both, and a sleeping waiter is never woken.
 *       Caught by p_no_lost_wakeup and by safety.
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] qemu_notify_accept.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-DBUG_X] qemu_notify_accept.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

#if defined(BUG_NOTIFIED_BEFORE_EVENT) && defined(BUG_SKIP_EVENT_WHEN_NOTIFIED)
#error "one planted bug at a time"
#endif

byte notify_me;
bool notified;
bool notifier;
bool bh_list;
bool env_done;

/* one aio_poll(true) of 2015 with aio_notify_accept */
inline qemu2015_poll(sleep, was)
{
	INLINE_ENTRY;
	ctx_poll_notify_me_add: atomic {
		notify_me = notify_me + 2; TRACE1(ctx_poll_notify_me_add, notify_me)
	};
	ctx_poll_check_work: atomic {
		sleep = !bh_list; TRACEV2(ctx_poll_check_work, bh_list, bh_list, sleep, sleep)
	};
	if
	:: sleep ->
end_idle_wait:
ctx_poll_wait:
		atomic { notifier -> sleep = false; TRACE1(ctx_poll_wait, notifier) }
	:: else -> skip
	fi;
	ctx_poll_notify_me_sub: atomic {
		notify_me = notify_me - 2; TRACE1(ctx_poll_notify_me_sub, notify_me)
	};
	ctx_notify_accept: atomic {
		was = notified; notified = false;
		TRACEV2(ctx_notify_accept, notified_old, was, notified, notified)
	};
	if
	:: was ->
		ctx_poll_event_clear: atomic {
			notifier = false; was = false; TRACE1(ctx_poll_event_clear, notifier)
		}
	:: else -> skip
	fi;
	bh_poll_take: atomic {
		TRACEV2(bh_poll_take, bh_list_old, bh_list, bh_list, false); bh_list = false
	}
}

active proctype home_thread()
{
	bool sleep, was;

	do
	:: true -> qemu2015_poll(sleep, was)
	od
}

active proctype temp_waiter()
{
	bool sleep, was;

	do
	:: true -> qemu2015_poll(sleep, was)
	:: true -> break
	od;
	env_waiter_stop: TRACE0(env_waiter_stop)
}

active proctype env_notifier()
{
	bool nm;

	do
	:: true ->
		bh_schedule_push: atomic { bh_list = true; TRACE1(bh_schedule_push, bh_list) };
		ctx_notify_read_notify_me: atomic {
			nm = (notify_me != 0); TRACE1(ctx_notify_read_notify_me, notify_me)
		};
		if
		:: nm ->
#if defined(BUG_NOTIFIED_BEFORE_EVENT)
			ctx_notify_set_notified: atomic { notified = true; TRACE1(ctx_notify_set_notified, notified) };
			ctx_notify_event_set: atomic { notifier = true; TRACE1(ctx_notify_event_set, notifier) }
#elif defined(BUG_SKIP_EVENT_WHEN_NOTIFIED)
			if
			:: !notified ->
				ctx_notify_event_set: atomic { notifier = true; TRACE1(ctx_notify_event_set, notifier) }
			:: else -> skip
			fi;
			ctx_notify_set_notified: atomic { notified = true; TRACE1(ctx_notify_set_notified, notified) }
#else
			ctx_notify_event_set: atomic { notifier = true; TRACE1(ctx_notify_event_set, notifier) };
			ctx_notify_set_notified: atomic { notified = true; TRACE1(ctx_notify_set_notified, notified) }
#endif
			; nm = false
		:: else -> skip
		fi
	:: true -> break
	od;
	env_notifier_stop: atomic { env_done = true; TRACE1(env_notifier_stop, env_done) }
}

active proctype env_watchdog()
{
	env_watchdog_hang: atomic { timeout -> TRACE1(env_watchdog_hang, bh_list); assert(!bh_list) }
}

ltl p_no_lost_wakeup { [] (bh_list -> <> !bh_list) }
ltl p_no_busy_loop   {
	[] (env_done -> <> [] !(home_thread@ctx_poll_notify_me_add || temp_waiter@ctx_poll_notify_me_add))
}
