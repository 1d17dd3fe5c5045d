/*
 * poll_idle.pml -- an idle poll handler leaves the poll list (io_poll_end, then a final poll)
 * while its device adds a request (docs/protocol.md §3, idle removal; bug-history B20).
 *
 * What it models
 *   impl/src/poll.rs  AioContext::poll(true) with one poll-capable handler that starts on the
 *       poll list: compute_timeout; try_poll_mode (ctx_poll_begin when poll mode is off, one
 *       io_poll round: handler_io_poll); after a round without success the handler may be
 *       found idle (the 7 s deadline, a nondeterministic choice here) and leaves the list:
 *       ctx_poll_idle_remove = remove it, io_poll_end (the device re-enables its kicks), then
 *       one final io_poll, as one step (trace.rs describes the step that way); then, if the
 *       poll would block, poll mode ends (ctx_poll_end: io_poll_end + ctx_poll_final_poll for
 *       the handlers still on the list); the wait on the handler's fd; dispatch
 *       (handler_poll_ready / ctx_poll_dispatch).
 *       Once removed, the handler is served through its fd only (re-joining the list when its
 *       fd becomes ready is not modelled: trace.rs has no step for it, see README).
 *   Processes: home_thread (poll(true) in a loop), env_guest (adds a request, kicks if
 *   notifications are enabled; any number of times, then stops), env_watchdog.
 *   Device variables as in poll_mode.pml.  on_poll_list: the handler is on the poll list.
 *
 * Properties
 *   p_no_lost_wakeup  [] (vq_pending -> <> !vq_pending)
 *   p_no_busy_loop    once the guest has stopped, the home thread eventually sleeps for good.
 *   safety            never sleep in poll mode; env_watchdog: no request pending when nothing
 *                     can move; invalid end states.
 *
 * Variants (ci/spin reads the next line; a variant without BUG_ must pass)
 *   @variants correct BUG_NO_FINAL_POLL_AFTER_POLL_END
 *   BUG_NO_FINAL_POLL_AFTER_POLL_END  hang.  The guest adds a request after the handler's last
 *       io_poll round, while its kicks are disabled; the handler is found idle and removed with
 *       io_poll_end but no final poll; it is never polled again, no kick ever comes, and the
 *       loop sleeps on the fd with the request in the ring.  Caught by p_no_lost_wakeup and by
 *       safety.  In Rust the same cfg also drops the final poll after ctx_poll_end; here only the
 *       idle removal loses it, so that the counterexample is the idle race (the ctx_poll_end
 *       path is poll_mode.pml's; the idle trail has no ctx_poll_final_poll step, so it replays
 *       unchanged on the Rust build with the cfg).
 *
 * Commands (from promela/; ci/spin runs every one of them, see README.md)
 *   spin -a [-DBUG_X] poll_idle.pml
 *   gcc -O0 -DSAFETY -DNOCLAIM -DBFS -o pan pan.c && ./pan -w20
 *   gcc -O0 -DNFAIR=3 -DNOREDUCE -o pan pan.c && ./pan -a -f -A -m200000 -w20 -N p_no_lost_wakeup
 *                                                  (and the same with -N p_no_busy_loop)
 *   spin -T -t -p [-DBUG_X] poll_idle.pml | grep '^@@@'   replays the trail pan wrote
 */

#include "common.pml"

bool poll_started;
bool on_poll_list = true;     /* the handler is on the context's poll list */
bool vq_pending;
bool vq_kick_enabled = true;
bool ioeventfd;
bool env_done;

/* one io_poll of the handler after its io_poll_end: the body of a final-poll step */
#define FINAL_IO_POLL(ready, tmo) \
	ready = vq_pending; \
	if \
	:: ready -> tmo = TMO_ZERO \
	:: else -> skip \
	fi

inline ctx_poll_idle_poll(tmo, ready, readable)
{
	INLINE_ENTRY;
	ctx_poll_compute_timeout: atomic {
		tmo = TMO_INFINITE; TRACEV1(ctx_poll_compute_timeout, timeout, tmo)
	};

	if
	:: on_poll_list ->
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
		};
		if
		:: !ready ->
			/* idle for too long: leave the poll list */
			ctx_poll_idle_remove: atomic {
				on_poll_list = false; vq_kick_enabled = true;
#ifndef BUG_NO_FINAL_POLL_AFTER_POLL_END
				FINAL_IO_POLL(ready, tmo);
#endif
				TRACEV4(ctx_poll_idle_remove, on_poll_list, on_poll_list,
				        vq_kick_enabled, vq_kick_enabled, ready, ready, timeout, tmo)
			}
		:: true -> skip
		fi
	:: else -> skip
	fi;

	if
	:: tmo != TMO_ZERO && poll_started ->
		ctx_poll_end: atomic {
			poll_started = false;
			if
			:: on_poll_list -> vq_kick_enabled = true
			:: else -> skip
			fi;
			TRACE3(ctx_poll_end, poll_started, on_poll_list, vq_kick_enabled)
		};
		if
		:: on_poll_list ->
			ctx_poll_final_poll: atomic {
				FINAL_IO_POLL(ready, tmo);
				TRACEV3(ctx_poll_final_poll, vq_pending, vq_pending, ready, ready, timeout, tmo)
			}
		:: else -> skip
		fi
	:: else -> skip
	fi;

	if
	:: tmo == TMO_ZERO -> skip
	:: true ->
end_idle_wait:
ctx_poll_wait:
		atomic {
			(tmo == TMO_ZERO || ioeventfd) ->
			assert(tmo == TMO_ZERO || !poll_started);
			readable = ioeventfd;
			TRACEV4(ctx_poll_wait, ioeventfd, ioeventfd, poll_started, poll_started,
			        timeout, tmo, readable, readable);
			tmo = TMO_ZERO
		}
	fi;

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
	bool ready, readable;

	do
	:: true -> ctx_poll_idle_poll(tmo, ready, readable)
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
