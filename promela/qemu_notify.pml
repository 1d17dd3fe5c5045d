/*
 * qemu_notify.pml -- mirror of QEMU's docs/spin/aio_notify.promela (2015, the notify_me
 * protocol of commit eabc977973, bug-history B1), written afresh in this project's names.
 *
 * What it models (the 2015 protocol, not today's; labels are in the trace style but are not
 * checked against impl/src/trace.rs)
 *   home_thread   aio_poll(true) of 2015: notify_me += 2; look for pending work (the BH list);
 *                 if there is none, sleep until the eventfd is set and clear it; notify_me -= 2;
 *                 take the work.
 *   env_notifier  aio_notify of 2015 after publishing work: write the eventfd only if
 *                 notify_me != 0 (there is no notified flag yet).  Any number of times, then
 *                 it stops.
 *   env_watchdog  fires when nothing can move.
 *
 * Properties
 *   p_no_lost_wakeup  [] (bh_list -> <> !bh_list)
 *   p_no_busy_loop    once the notifier has stopped, the waiter eventually sleeps for good.
 *   safety            env_watchdog: no work pending when nothing can move; invalid end states.
 *
 * Variants (ci/spin reads the next line; a variant without BUG_ must pass)
 *   @variants correct BUG_NO_RECHECK
 *   BUG_NO_RECHECK  hang.  The waiter announces itself (notify_me += 2) and sleeps without
 *       looking for work first; work published while notify_me was still 0 came without an
 *       eventfd write.  Caught by p_no_lost_wakeup and by safety.
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] qemu_notify.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-DBUG_X] qemu_notify.pml | grep '^@@@'   replays the trail pan wrote
 *   QEMU's own model checked one never claim with `./a.out -a` (no -f); our runs need -f:
 *   without weak fairness a cycle in which the waiter is simply never scheduled is reported.
 */

#include "common.pml"

byte notify_me;
bool notifier;     /* the eventfd */
bool bh_list;      /* work is pending */
bool env_done;

active proctype home_thread()
{
	bool sleep;

	do
	:: true ->
		ctx_poll_notify_me_add: atomic {
			notify_me = notify_me + 2; sleep = true; TRACE1(ctx_poll_notify_me_add, notify_me)
		};
#ifndef BUG_NO_RECHECK
		ctx_poll_check_work: atomic {
			if
			:: bh_list -> sleep = false
			:: else -> skip
			fi;
			TRACEV2(ctx_poll_check_work, bh_list, bh_list, sleep, sleep)
		};
#endif
		if
		:: sleep ->
end_idle_wait:
ctx_poll_wait:
			atomic {
				notifier -> notifier = false; sleep = false;
				TRACE1(ctx_poll_wait, notifier)
			}
		:: else -> skip
		fi;
		ctx_poll_notify_me_sub: atomic {
			notify_me = notify_me - 2; TRACE1(ctx_poll_notify_me_sub, notify_me)
		};
		bh_poll_take: atomic {
			TRACEV2(bh_poll_take, bh_list_old, bh_list, bh_list, false); bh_list = false
		}
	od
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
ltl p_no_busy_loop   { [] (env_done -> <> [] !(home_thread@ctx_poll_notify_me_add)) }
