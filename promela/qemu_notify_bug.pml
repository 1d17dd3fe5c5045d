/*
 * qemu_notify_bug.pml -- mirror of QEMU's docs/spin/aio_notify_bug.promela (2015, bug-history
 * B2): a second, temporary waiter, and where the eventfd is cleared.  Written afresh.
 *
 * What it models (2015 protocol; labels not checked against impl/src/trace.rs)
 *   home_thread, temp_waiter  aio_poll(true) of 2015: notify_me += 2; if no work is pending,
 *       sleep until the eventfd is set (the wait does not clear it); notify_me -= 2; then clear
 *       the eventfd (ctx_poll_event_clear) and take the work.  temp_waiter may stop after any
 *       call (QEMU: a vCPU thread's aio_poll on the main context, next to the main loop).
 *   env_notifier  publish work; write the eventfd if notify_me != 0.  Any number of times.
 *   env_watchdog  fires when nothing can move.
 *
 * Properties
 *   p_no_lost_wakeup  [] (bh_list -> <> !bh_list)
 *   p_no_busy_loop    once the notifier has stopped, both waiters eventually stop starting new
 *                     calls (sleep for good, or stopped).
 *   safety            env_watchdog: no work pending when nothing can move; invalid end states.
 *   QEMU's file checks one claim at a time and its default claim ("the event keeps toggling")
 *   does not see this bug: its header command for -DBUG reports 0 errors.  Only the "work is
 *   eventually taken" claim (its CHECK_REQ) catches it.  We always run both.
 *
 * Variants (ci/spin reads the next line; a variant without BUG_ must pass)
 *   @variants correct BUG_LATE_CLEAR
 *   BUG_LATE_CLEAR  hang.  The eventfd is cleared after the work was taken: temp_waiter takes
 *       the work, the notifier publishes new work and, seeing home_thread's notify_me, writes
 *       the eventfd; temp_waiter's late clear eats that write and it stops; home_thread, which
 *       found no work before sleeping, sleeps forever.  Caught by p_no_lost_wakeup and safety.
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] qemu_notify_bug.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-DBUG_X] qemu_notify_bug.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

byte notify_me;
bool notifier;
bool bh_list;
bool env_done;

/* one aio_poll(true) of 2015 */
inline qemu2015_poll(sleep)
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
#ifndef BUG_LATE_CLEAR
	ctx_poll_event_clear: atomic { notifier = false; TRACE1(ctx_poll_event_clear, notifier) };
#endif
	bh_poll_take: atomic {
		TRACEV2(bh_poll_take, bh_list_old, bh_list, bh_list, false); bh_list = false
	};
#ifdef BUG_LATE_CLEAR
	ctx_poll_event_clear: atomic { notifier = false; TRACE1(ctx_poll_event_clear, notifier) };
#endif
}

active proctype home_thread()
{
	bool sleep;

	do
	:: true -> qemu2015_poll(sleep)
	od
}

active proctype temp_waiter()
{
	bool sleep;

	do
	:: true -> qemu2015_poll(sleep)
	:: true -> break
	od;
	env_waiter_stop: TRACE0(env_waiter_stop)
}

active proctype env_notifier()
{
	do
	:: true ->
		bh_schedule_push: atomic { bh_list = true; TRACE1(bh_schedule_push, bh_list) };
		ctx_notify_read_notify_me: atomic {
			if
			:: notify_me != 0 -> notifier = true
			:: else -> skip
			fi;
			TRACE2(ctx_notify_read_notify_me, notify_me, notifier)
		}
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
