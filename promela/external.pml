/*
 * external.pml -- two pollers on one context: an external-loop integration and a blocking poll
 * (bug-history B1, B2), plus a notifier.
 *
 * What it models
 *   impl/src/ctx.rs   AioContext::prepare   inline ctx_prepare: notify_me |= 1; fence;
 *                                            compute_timeout (after the fence: exact)
 *                     AioContext::check     inline ctx_check: notify_me &= !1; notify_accept
 *                     AioContext::dispatch  inline ctx_dispatch (common.pml): the notifier's read
 *                                            handler, the BH scan
 *                     AioContext::poll(true), notify, notify_accept: common.pml
 *   Processes
 *     ext_loop       the external loop (QEMU: the glib main loop's GSource; here: a glib/tokio
 *                    loop driving the context's fd): prepare, then its own wait on the fd
 *                    (env_loop_wait: the foreign loop's poll, level-triggered, woken only while
 *                    the eventfd is readable), then check and dispatch.  Forever.
 *     blocking_poll  a second thread calling poll(true) on the same context, any number of
 *                    times, then it stops (QEMU: a vCPU thread in AIO_WAIT_WHILE, B2's
 *                    "temporary waiter").
 *     env_notifier   pushes work and notifies, any number of times, then stops.
 *   The home role (the right to run prepare/check/dispatch/poll) is a lock, home_lock, like
 *   QEMU's BQL for the main context: ext_loop holds it for prepare and for check+dispatch and
 *   drops it around its wait; blocking_poll holds it for a whole poll, including its wait.
 *   (With a single fixed home thread the same interleavings arise when poll(true) runs in a
 *   task of the thread whose runtime awaits the context's fd, e.g. tokio's current-thread
 *   runtime: the awaited readiness is the external wait.)
 *
 * Properties
 *   p_no_lost_wakeup  [] (bh_list -> <> !bh_list)
 *   p_no_busy_loop    once the notifier has stopped, ext_loop eventually stops starting new
 *                     iterations, and so does blocking_poll unless it has stopped.
 *   safety            env_watchdog: no BH pending when nothing can move; invalid end states.
 *
 * Variants (ci/spin reads the next line; a+b means -Da -Db; a variant without BUG_ must pass)
 *   @variants correct WEAK_TIMEOUT_READ BUG_SKIP_EVENT_WHEN_NOTIFIED BUG_DRAIN_AFTER_SCAN
 *   WEAK_TIMEOUT_READ: blocking_poll's compute_timeout may miss the BH (see notify.pml); the
 *       correct model must pass with it too.
 *   BUG_SKIP_EVENT_WHEN_NOTIFIED  hang.  A notify that lands while nobody is armed (notify_me 0)
 *       after the work it published was already taken leaves notified set with no work; the
 *       external loop prepares and sleeps on the fd; the next notify sees notified already set
 *       and skips the eventfd write.  The external loop never reads notified, so it sleeps
 *       with the BH pending.  Caught by p_no_lost_wakeup and by safety.
 *   BUG_DRAIN_AFTER_SCAN (proposed name, not in the brief's list: see README "Findings")  hang.
 *       The notifier's read handler runs after the BH scan, as QEMU orders it (docs/protocol.md
 *       §7.2).  While ext_loop sleeps in its wait, blocking_poll's wait (even a zero-timeout one: a
 *       poll(false) does the same) reports the eventfd readable; it takes the BH; a second
 *       notify sees ext_loop's bit in notify_me and writes the eventfd; blocking_poll's late
 *       drain eats that write and it stops; ext_loop sleeps with the BH pending (B2's shape in
 *       today's protocol; 29 steps, no stale read).  Caught by p_no_lost_wakeup and by safety.
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] [-DWEAK_TIMEOUT_READ] external.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-D...] external.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

byte notify_me;
bool notified;
bool notifier;
bool bh_list;
byte home_lock;      /* env: 0 free, else pid + 1 of the thread acting as home thread */
bool env_done;

/* hook: the step ctx_poll_compute_timeout.  After prepare's fence the read is exact; poll's
 * read comes before its arming fence and, with WEAK_TIMEOUT_READ, may be stale (notify.pml). */
inline ctx_compute_timeout(tmo, may_miss)
{
	if
	:: bh_list -> tmo = TMO_ZERO
	:: else -> tmo = TMO_INFINITE
	fi;
#ifdef WEAK_TIMEOUT_READ
	if
	:: may_miss && tmo == TMO_ZERO -> tmo = TMO_INFINITE   /* stale read (notify.pml) */
	:: true -> skip
	fi;
#endif
	TRACEV3(ctx_poll_compute_timeout, bh_list, bh_list, stale, (bh_list && tmo != TMO_ZERO),
	        timeout, tmo)
}

inline ctx_poll_scan()
{
	INLINE_ENTRY;
	bh_poll_take: atomic {
		TRACEV2(bh_poll_take, bh_list_old, bh_list, bh_list, false);
		bh_list = false
	}
}

/* AioContext::prepare */
inline ctx_prepare(tmo)
{
	INLINE_ENTRY;
	ctx_prepare_notify_me_or: atomic {
		notify_me = notify_me | 1; TRACE1(ctx_prepare_notify_me_or, notify_me)
	};
	ctx_prepare_fence: TRACE0(ctx_prepare_fence);
	ctx_poll_compute_timeout: atomic { ctx_compute_timeout(tmo, false) }
}

/* AioContext::check (readiness is recomputed by dispatch, which always runs here) */
inline ctx_check()
{
	INLINE_ENTRY;
	ctx_check_notify_me_clear: atomic {
		notify_me = notify_me & ~1; TRACE1(ctx_check_notify_me_clear, notify_me)
	};
	ctx_notify_accept()
}

active proctype ext_loop()
{
	byte tmo;
	bool readable;

	do
	:: true ->
end_lock_prepare:
env_home_acquire_prepare:
		atomic { home_lock == 0 -> home_lock = _pid + 1; TRACE1(env_home_acquire_prepare, home_lock) };
		ctx_prepare(tmo);
		env_home_release_prepare: atomic { home_lock = 0; TRACE1(env_home_release_prepare, home_lock) };
end_idle_wait:
env_loop_wait:
		atomic {
			(tmo == TMO_ZERO || notifier) ->
			readable = notifier;
			TRACEV3(env_loop_wait, notifier, notifier, timeout, tmo, readable, readable);
			tmo = TMO_ZERO
		};
end_lock_check:
env_home_acquire_check:
		atomic { home_lock == 0 -> home_lock = _pid + 1; TRACE1(env_home_acquire_check, home_lock) };
		ctx_check();
		ctx_dispatch(readable);
		env_home_release_check: atomic { home_lock = 0; TRACE1(env_home_release_check, home_lock) }
	od
}

active proctype blocking_poll()
{
	byte tmo;
	bool armed, readable;

	do
	:: true ->
end_lock_poll:
env_home_acquire_poll:
		atomic { home_lock == 0 -> home_lock = _pid + 1; TRACE1(env_home_acquire_poll, home_lock) };
		ctx_poll(tmo, armed, readable);
		env_home_release_poll: atomic { home_lock = 0; TRACE1(env_home_release_poll, home_lock) }
	:: true -> break
	od;
	env_poller_stop: TRACE0(env_poller_stop)
}

active proctype env_notifier()
{
	byte nm;
	bool was;

	do
	:: true ->
		bh_schedule_push: atomic { bh_list = true; TRACE1(bh_schedule_push, bh_list) };
		ctx_notify(nm, was)
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
	[] (env_done -> <> [] !(ext_loop@ctx_prepare_notify_me_or
	                        || blocking_poll@ctx_poll_compute_timeout))
}
