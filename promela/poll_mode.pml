/*
 * poll_mode.pml -- userspace poll mode: io_poll_begin / io_poll_end around a virtio-like device
 * that suppresses its eventfd kick while it is being polled (bug-history B16).
 *
 * What it models
 *   impl/src/poll.rs  AioContext::poll(blocking)   inline ctx_poll_mode_poll:
 *       compute_timeout (0 for poll(false)); try_poll_mode: io_poll_begin on the handler if poll
 *       mode is off (ctx_poll_begin), then one io_poll round (handler_io_poll: a cheap check of
 *       the ring, no work); if the poll would block: leave poll mode first -- io_poll_end
 *       (ctx_poll_end) then a final io_poll (ctx_poll_final_poll); the wait on the handler's
 *       fd; dispatch: io_poll_ready (handler_poll_ready) for a successful poll, the read
 *       callback (ctx_poll_dispatch: drains the ioeventfd and processes the ring) for a
 *       readable fd.  Poll mode is never left on a non-blocking iteration.
 *   impl/src/handler.rs  the handler's io_poll / io_poll_begin / io_poll_end / io_poll_ready
 *       callbacks, here those of a virtio queue: begin disables guest notifications, end
 *       re-enables them (vq_kick_enabled).
 *   Processes
 *     home_thread  its caller (the test driver, env_driver_call) makes up to NONBLOCKING calls
 *                  poll(false), the others poll(true).
 *     env_guest    adds a request to the ring (vq_pending), then kicks the ioeventfd if
 *                  notifications are enabled; any number of times, then stops.
 *     env_watchdog fires when nothing can move.
 *   The context's own notify handshake is left out (notify.pml has it); the device talks to
 *   its handler's fd only.  The guest's "add; full barrier; read the flag" and the host's
 *   "enable; full barrier; poll" are a Dekker pair: each step here is SC.
 *
 * Properties
 *   p_no_lost_wakeup  [] (vq_pending -> <> !vq_pending): every request is processed.
 *   p_no_busy_loop    once the guest has stopped, the home thread eventually sleeps for good.
 *   safety            assertion: poll mode is off during every blocking wait (B16: sleeping
 *                     with guest notifications disabled hangs); env_watchdog: no request
 *                     pending when nothing can move; invalid end states.
 *
 * Variants (ci/spin reads the next line; a variant without BUG_ must pass)
 *   @variants correct BUG_NO_FINAL_POLL_AFTER_POLL_END
 *   BUG_NO_FINAL_POLL_AFTER_POLL_END  hang.  The guest adds a request after the last io_poll
 *       round while notifications are still disabled, so it does not kick; the loop calls
 *       io_poll_end and goes straight to the wait: nobody looks at the ring again.  Caught by
 *       p_no_lost_wakeup and by safety.
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] poll_mode.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-DBUG_X] poll_mode.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

#define NONBLOCKING 1

bool poll_started;      /* the context is in userspace poll mode (io_poll_begin called) */
bool vq_pending;        /* env: the guest's ring holds an unprocessed request */
bool vq_kick_enabled = true;  /* env: guest notifications enabled (io_poll_end state) */
bool ioeventfd;         /* env: the handler's eventfd counter is non-zero */
bool env_done;

/*
 * One call of AioContext::poll(blocking) with one poll-capable handler.
 * tmo: byte; ready, readable: bool; all 0 on entry and exit.
 */
inline ctx_poll_mode_poll(blocking, tmo, ready, readable)
{
	INLINE_ENTRY;
	ctx_poll_compute_timeout: atomic {
		if
		:: blocking -> tmo = TMO_INFINITE
		:: else -> tmo = TMO_ZERO
		fi;
		TRACEV2(ctx_poll_compute_timeout, blocking, blocking, timeout, tmo)
	};

	/* try_poll_mode: only with a non-zero budget, i.e. a non-zero timeout */
	if
	:: tmo != TMO_ZERO ->
		if
		:: !poll_started ->
			ctx_poll_begin: atomic {
				poll_started = true; vq_kick_enabled = false;
				TRACE2(ctx_poll_begin, poll_started, vq_kick_enabled)
			}
		:: else -> skip
		fi;
		handler_io_poll: atomic {
			ready = vq_pending;
			if
			:: ready -> tmo = TMO_ZERO
			:: else -> skip
			fi;
			TRACEV3(handler_io_poll, vq_pending, vq_pending, ready, ready, timeout, tmo)
		}
	:: else -> skip
	fi;

	/* about to block: leave poll mode first, then poll once more */
	if
	:: tmo != TMO_ZERO && poll_started ->
		ctx_poll_end: atomic {
			poll_started = false; vq_kick_enabled = true;
			TRACE2(ctx_poll_end, poll_started, vq_kick_enabled)
		};
#ifndef BUG_NO_FINAL_POLL_AFTER_POLL_END
		ctx_poll_final_poll: atomic {
			ready = vq_pending;
			if
			:: ready -> tmo = TMO_ZERO
			:: else -> skip
			fi;
			TRACEV3(ctx_poll_final_poll, vq_pending, vq_pending, ready, ready, timeout, tmo)
		}
#else
		skip
#endif
	:: else -> skip
	fi;

	/* the wait; with timeout 0 it may be skipped or be a zero-timeout check
	 * (docs/protocol.md §6.1) */
	if
	:: tmo == TMO_ZERO -> skip
	:: true ->
end_idle_wait:
ctx_poll_wait:
		atomic {
			(tmo == TMO_ZERO || ioeventfd) ->
			assert(tmo == TMO_ZERO || !poll_started);   /* never sleep in poll mode */
			readable = ioeventfd;
			TRACEV4(ctx_poll_wait, ioeventfd, ioeventfd, poll_started, poll_started,
			        timeout, tmo, readable, readable);
			tmo = TMO_ZERO
		}
	fi;

	/* dispatch */
	if
	:: ready ->
		handler_poll_ready: atomic {
			vq_pending = false; ready = false; TRACE1(handler_poll_ready, vq_pending)
		}
	:: else -> skip
	fi;
	if
	:: readable ->
		ctx_poll_dispatch: atomic {
			ioeventfd = false; vq_pending = false; readable = false;
			TRACE2(ctx_poll_dispatch, ioeventfd, vq_pending)
		}
	:: else -> skip
	fi
}

active proctype home_thread()
{
	byte tmo;
	bool blocking, ready, readable;
	byte nonblocking_left = NONBLOCKING;

	do
	:: true ->
		env_driver_call: atomic {
			if
			:: nonblocking_left > 0 -> blocking = false; nonblocking_left--
			:: true -> blocking = true
			fi;
			TRACE1(env_driver_call, blocking)
		};
		ctx_poll_mode_poll(blocking, tmo, ready, readable);
		blocking = false
	od
}

active proctype env_guest()
{
	do
	:: true ->
		env_guest_submit: atomic { vq_pending = true; TRACE1(env_guest_submit, vq_pending) };
		env_guest_kick: atomic {
			if
			:: vq_kick_enabled -> ioeventfd = true
			:: else -> skip
			fi;
			TRACE2(env_guest_kick, vq_kick_enabled, ioeventfd)
		}
	:: true -> break
	od;
	env_guest_stop: atomic { env_done = true; TRACE1(env_guest_stop, env_done) }
}

active proctype env_watchdog()
{
	env_watchdog_hang: atomic {
		timeout -> TRACE1(env_watchdog_hang, vq_pending); assert(!vq_pending)
	}
}

ltl p_no_lost_wakeup { [] (vq_pending -> <> !vq_pending) }
ltl p_no_busy_loop   { [] (env_done -> <> [] !(home_thread@ctx_poll_compute_timeout)) }
