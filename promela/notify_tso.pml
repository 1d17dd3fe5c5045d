/*
 * notify_tso.pml -- the notify handshake on a store-buffer (TSO, x86-like) machine: shows that
 * each of the two full fences is needed (bug-history B8, B13).
 *
 * What it models
 *   impl/src/notify.rs AioContext::notify and notify_accept, impl/src/ctx.rs AioContext::poll
 *   (the notify_me / notified part), as in notify.pml, but every plain store goes to the
 *   storing thread's FIFO store buffer and reaches memory later:
 *     - tso_store: append (variable, value) to the thread's buffer;
 *     - tso_load:  the thread's own newest buffered store to that variable, else memory;
 *     - tso_flush: a separate process per thread moves the oldest entry to memory, at any
 *                  moment (weak fairness makes it happen eventually);
 *     - a full fence (fence(SeqCst)) waits until the thread's buffer is empty;
 *     - locked read-modify-writes (the BH list push and take) and the eventfd syscalls also
 *       wait for an empty buffer and then act on memory directly (x86 locked instructions).
 *   Release fences are no-ops on TSO; they remain as steps.  Buffered: notify_me (home thread)
 *   and notified (both threads).
 *   Processes: home_thread (poll(true) in a loop); env_notifier (push work + notify, any number
 *   of times, then stops); tso_flusher_home, tso_flusher_notifier; env_watchdog.
 *
 * Properties
 *   p_no_lost_wakeup  [] (bh_list -> <> !bh_list)
 *   p_no_busy_loop    once the notifier has stopped, the home thread eventually sleeps for good.
 *   safety            env_watchdog: no work pending when nothing can move (buffers drained);
 *                     a store buffer never overflows; invalid end states.
 *
 * Variants (ci/spin reads the next line; a variant without BUG_ must pass)
 *   @variants correct BUG_NOTIFY_NO_SEQCST_FENCE BUG_POLL_NO_FENCE_AFTER_ARM
 *   BUG_NOTIFY_NO_SEQCST_FENCE   hang.  notify's store of notified is still in its buffer when
 *       it loads notify_me = 0 (the poller's arm is not in memory yet); the poller, after its own
 *       fence, reads notified = 0 from memory and sleeps; nobody writes the eventfd.  The
 *       store-buffering litmus test.  Caught by p_no_lost_wakeup and by safety.
 *   BUG_POLL_NO_FENCE_AFTER_ARM  hang.  The mirror image: the poller's notify_me += 2 sits in
 *       its buffer while it reads notified = 0; notify, after its fence, reads notify_me = 0.
 *       Caught by p_no_lost_wakeup and by safety.
 *   With both fences the model passes (the fence rule forbids the store-buffering outcome).
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] notify_tso.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-DBUG_X] notify_tso.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

#define SB_CAP      3   /* enough: the assertion in tso_store checks it */
#define V_NOTIFY_ME 1
#define V_NOTIFIED  2
#define T_HOME      0
#define T_NOTIFIER  1

typedef store_buffer {
	byte var[SB_CAP];
	byte val[SB_CAP];
	byte n      /* entries in use */
};

byte notify_me;       /* memory */
bool notified;        /* memory */
bool notifier;        /* the eventfd (kernel: always coherent) */
bool bh_list;         /* written by locked RMW only */
store_buffer sb[2];   /* sb[T_HOME], sb[T_NOTIFIER] */
bool env_done;

#define sb_empty(t) (sb[t].n == 0)

/* res = what thread t reads for variable vid: its newest buffered store to vid, else memory
 * (entries are scanned oldest first, so the newest match wins).  Use inside an atomic step. */
inline tso_load(t, vid, res)
{
	res = (vid == V_NOTIFIED -> notified : notify_me);
	if
	:: sb[t].n > 0 && sb[t].var[0] == vid -> res = sb[t].val[0]
	:: else -> skip
	fi;
	if
	:: sb[t].n > 1 && sb[t].var[1] == vid -> res = sb[t].val[1]
	:: else -> skip
	fi;
	if
	:: sb[t].n > 2 && sb[t].var[2] == vid -> res = sb[t].val[2]
	:: else -> skip
	fi
}

/* thread t stores x to vid: into its buffer.  Use inside an atomic step. */
inline tso_store(t, vid, x)
{
	assert(sb[t].n < SB_CAP);
	sb[t].var[sb[t].n] = vid;
	sb[t].val[sb[t].n] = x;
	sb[t].n++
}

/* the oldest buffered store of thread t reaches memory: the body of the step tso_flush */
inline tso_flush_one(t)
{
	sb[t].n > 0 ->
	if
	:: sb[t].var[0] == V_NOTIFIED -> notified = sb[t].val[0]
	:: else -> notify_me = sb[t].val[0]
	fi;
	sb[t].var[0] = sb[t].var[1]; sb[t].val[0] = sb[t].val[1];
	sb[t].var[1] = sb[t].var[2]; sb[t].val[1] = sb[t].val[2];
	sb[t].var[2] = 0; sb[t].val[2] = 0;
	sb[t].n--;
	TRACEV3(tso_flush, thread, t, notify_me, notify_me, notified, notified)
}

active proctype home_thread()
{
	byte tmo, v;
	bool armed, readable;

	do
	:: true ->
		ctx_poll_compute_timeout: atomic {
			if
			:: bh_list -> tmo = TMO_ZERO
			:: else -> tmo = TMO_INFINITE
			fi;
			TRACEV2(ctx_poll_compute_timeout, bh_list, bh_list, timeout, tmo)
		};
		if
		:: tmo != TMO_ZERO ->
			ctx_poll_userspace: atomic {
				tso_load(T_HOME, V_NOTIFIED, v);
				if
				:: v -> tmo = TMO_ZERO
				:: else -> skip
				fi;
				TRACEV2(ctx_poll_userspace, notified, v, timeout, tmo);
				v = 0
			}
		:: true -> skip
		fi;
		if
		:: tmo != TMO_ZERO ->
			ctx_poll_notify_me_add: atomic {
				tso_load(T_HOME, V_NOTIFY_ME, v);
				tso_store(T_HOME, V_NOTIFY_ME, v + 2);
				armed = true;
				TRACEV2(ctx_poll_notify_me_add, notify_me, v + 2, buffered, 1);
				v = 0
			};
#ifndef BUG_POLL_NO_FENCE_AFTER_ARM
			ctx_poll_fence: atomic { sb_empty(T_HOME) -> TRACE0(ctx_poll_fence) };
#endif
			ctx_poll_recheck_notified: atomic {
				tso_load(T_HOME, V_NOTIFIED, v);
				if
				:: v -> tmo = TMO_ZERO
				:: else -> skip
				fi;
				TRACEV2(ctx_poll_recheck_notified, notified, v, timeout, tmo);
				v = 0
			}
		:: else -> skip
		fi;
		/* the wait is a syscall: the buffer drains first */
		if
		:: tmo == TMO_ZERO -> skip
		:: true ->
end_idle_wait:
ctx_poll_wait:
			atomic {
				sb_empty(T_HOME) && (tmo == TMO_ZERO || notifier) ->
				readable = notifier;
				TRACEV3(ctx_poll_wait, notifier, notifier, timeout, tmo, readable, readable);
				tmo = TMO_ZERO
			}
		fi;
		if
		:: armed ->
			ctx_poll_notify_me_sub: atomic {
				tso_load(T_HOME, V_NOTIFY_ME, v);
				tso_store(T_HOME, V_NOTIFY_ME, v - 2);
				armed = false;
				TRACEV2(ctx_poll_notify_me_sub, notify_me, v - 2, buffered, 1);
				v = 0
			}
		:: else -> skip
		fi;
		ctx_notify_accept: atomic {
			tso_store(T_HOME, V_NOTIFIED, false);
			TRACEV2(ctx_notify_accept, notified, 0, buffered, 1)
		};
		ctx_notify_accept_fence: atomic { sb_empty(T_HOME) -> TRACE0(ctx_notify_accept_fence) };
		if
		:: readable ->
			ctx_poll_event_drain: atomic {
				sb_empty(T_HOME) -> notifier = false; readable = false;
				TRACE1(ctx_poll_event_drain, notifier)
			}
		:: else -> skip
		fi;
		bh_poll_take: atomic {
			sb_empty(T_HOME) ->
			TRACEV2(bh_poll_take, bh_list_old, bh_list, bh_list, false);
			bh_list = false
		}
	od
}

active proctype env_notifier()
{
	byte v;

	do
	:: true ->
		/* Bh::schedule, flags abstracted: the push is a locked CAS */
		bh_schedule_push: atomic {
			sb_empty(T_NOTIFIER) -> bh_list = true; TRACE1(bh_schedule_push, bh_list)
		};
		ctx_notify_release_fence: TRACE0(ctx_notify_release_fence);
		ctx_notify_set_notified: atomic {
			tso_store(T_NOTIFIER, V_NOTIFIED, true);
			TRACEV2(ctx_notify_set_notified, notified, 1, buffered, 1)
		};
#ifndef BUG_NOTIFY_NO_SEQCST_FENCE
		ctx_notify_fence: atomic { sb_empty(T_NOTIFIER) -> TRACE0(ctx_notify_fence) };
#endif
		ctx_notify_read_notify_me: atomic {
			tso_load(T_NOTIFIER, V_NOTIFY_ME, v);
			TRACEV1(ctx_notify_read_notify_me, notify_me, v)
		};
		if
		:: v != 0 ->
			ctx_notify_event_set: atomic {
				sb_empty(T_NOTIFIER) -> notifier = true; v = 0;
				TRACE1(ctx_notify_event_set, notifier)
			}
		:: else -> skip
		fi
	:: true -> break
	od;
	env_notifier_stop: atomic { env_done = true; TRACE1(env_notifier_stop, env_done) }
}

/* one flusher per thread; sitting idle with an empty buffer is a valid end state */
active proctype tso_flusher_home()
{
end_tso_idle:
tso_flush:
	do
	:: atomic { tso_flush_one(T_HOME) }
	od
}

active proctype tso_flusher_notifier()
{
end_tso_idle:
tso_flush:
	do
	:: atomic { tso_flush_one(T_NOTIFIER) }
	od
}

active proctype env_watchdog()
{
	env_watchdog_hang: atomic {
		timeout -> TRACE1(env_watchdog_hang, bh_list); assert(!bh_list)
	}
}

ltl p_no_lost_wakeup { [] (bh_list -> <> !bh_list) }
ltl p_no_busy_loop   { [] (env_done -> <> [] !(home_thread@ctx_poll_compute_timeout)) }
