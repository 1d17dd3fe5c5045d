/*
 * notify.pml -- the notify handshake of today's protocol (polling era).  QEMU has no model of it.
 *
 * What it models
 *   impl/src/notify.rs  AioContext::notify          inline ctx_notify          (common.pml)
 *                       AioContext::notify_accept   ctx_notify_accept()        (common.pml)
 *   impl/src/ctx.rs     AioContext::poll(true)      inline ctx_poll            (common.pml):
 *       compute_timeout; userspace polling with notify_me == 0 that watches notified (seeing it
 *       ends polling and is not progress); notify_me += 2, fence, re-check of notified; the wait
 *       (blocks until the eventfd is set, or returns at once with timeout 0); notify_me -= 2;
 *       notify_accept; the notifier's read handler drains the eventfd if the wait reported it
 *       readable; the BH scan (bh_poll_take).
 *   Processes: home_thread (poll in a loop); env_notifier[2] (each pushes work and notifies, any
 *   number of times, then stops); env_watchdog (fires when nothing can move).
 *   The work is a BH on bh_list; its flags are abstracted away here (bh.pml has them).
 *
 *   Model option WEAK_TIMEOUT_READ: compute_timeout may miss a pending BH (a nondeterministic
 *   choice; its trace line says stale=1).  compute_timeout runs before the arming fence, so on
 *   a weak-memory machine its read of the list may be stale.  With the option the model checks
 *   that correctness rests on notified alone (bug-history B13); it is also what makes
 *   BUG_ACCEPT_AFTER_SCAN visible: with an exact compute_timeout that bug is harmless under
 *   sequential consistency (the next compute_timeout sees the BH), so only weak memory shows
 *   it (loom; here the option).  A trail with a stale=1 step cannot be replayed on the Rust
 *   code under a sequentially consistent scheduler.  Without the option every step is SC.
 *
 * Properties
 *   p_no_lost_wakeup  [] (bh_list -> <> !bh_list): published work is eventually taken.
 *   p_no_busy_loop    once both notifiers have stopped, the home thread eventually stops
 *                     starting poll iterations, i.e. it sleeps for good.
 *   safety            env_watchdog asserts that no BH is pending when nothing can move (a hang);
 *                     invalid end states (only the idle wait is a valid end).
 *
 * Variants (ci/spin reads the next line; a+b means -Da -Db; a variant without BUG_ must pass)
 *   @variants correct WEAK_TIMEOUT_READ BUG_POLL_NO_RECHECK_NOTIFIED BUG_ACCEPT_AFTER_SCAN+WEAK_TIMEOUT_READ
 *   BUG_POLL_NO_RECHECK_NOTIFIED  hang.  A notify lands during userspace polling (notify_me is 0,
 *       so no eventfd write) after the polling round looked; the poller arms notify_me and
 *       sleeps without looking at notified again.  Caught by p_no_lost_wakeup and by safety.
 *   BUG_ACCEPT_AFTER_SCAN (checked with WEAK_TIMEOUT_READ)  hang.  A notify lands between the
 *       scan and the accept (notify_me is 0 again, no eventfd write); the late accept erases
 *       it, compute_timeout misses the BH (stale), and the re-check finds notified false.
 *       Caught by p_no_lost_wakeup and by safety.
 *   Not checked here: BUG_SKIP_EVENT_WHEN_NOTIFIED.  With a single poller it is harmless (the
 *   model passes with it): when a notifier finds notified already set, either the poller has
 *   not yet re-read it after arming (it will see it and not sleep), or it was set after that
 *   re-read by a notifier that then read notify_me != 0 and wrote the eventfd.  It hangs an
 *   external loop, which never reads notified: see external.pml.
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] [-DWEAK_TIMEOUT_READ] notify.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-D...] notify.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

#define NOTIFIERS 2

byte notify_me;     /* bit 0: external loop (unused here); +2 per poll between arm and disarm */
bool notified;      /* notify was called since the last accept */
bool notifier;      /* the eventfd counter is non-zero */
bool bh_list;       /* some BH is on the context's list */
byte env_left = NOTIFIERS;

#define env_done (env_left == 0)

/* hook: the step ctx_poll_compute_timeout (runs inside its atomic) */
inline ctx_compute_timeout(tmo, may_miss)
{
	if
	:: bh_list -> tmo = TMO_ZERO
	:: else -> tmo = TMO_INFINITE
	fi;
#ifdef WEAK_TIMEOUT_READ
	if
	:: may_miss && tmo == TMO_ZERO -> tmo = TMO_INFINITE   /* stale read: see the header */
	:: true -> skip
	fi;
#endif
	TRACEV3(ctx_poll_compute_timeout, bh_list, bh_list, stale, (bh_list && tmo != TMO_ZERO),
	        timeout, tmo)
}

/* hook: the BH scan, abstracted to taking the whole list */
inline ctx_poll_scan()
{
	INLINE_ENTRY;
	bh_poll_take: atomic {
		TRACEV2(bh_poll_take, bh_list_old, bh_list, bh_list, false);
		bh_list = false
	}
}

active proctype home_thread()
{
	byte tmo;
	bool armed, readable;

	do
	:: true -> ctx_poll(tmo, armed, readable)
	od
}

active [NOTIFIERS] proctype env_notifier()
{
	byte nm;
	bool was;

	do
	:: true ->
		/* Bh::schedule, flags abstracted: publish the work, then notify */
		bh_schedule_push: atomic { bh_list = true; TRACE1(bh_schedule_push, bh_list) };
		ctx_notify(nm, was)
	:: true -> break
	od;
	env_notifier_stop: atomic { env_left--; TRACE1(env_notifier_stop, env_left) }
}

active proctype env_watchdog()
{
	env_watchdog_hang: atomic { timeout -> TRACE1(env_watchdog_hang, bh_list); assert(!bh_list) }
}

ltl p_no_lost_wakeup { [] (bh_list -> <> !bh_list) }
ltl p_no_busy_loop   { [] (env_done -> <> [] !(home_thread@ctx_poll_compute_timeout)) }
