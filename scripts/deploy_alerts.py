"""Deploy lifecycle — ``event`` bindings on ``deploy.*``.

The deploy manager dispatches ``deploy.requested``, ``deploy.approved``,
``deploy.started``, ``deploy.finished`` (payload: the job record — id,
module, env, mode, status, requester, requester_nick, channel, summary, with
secrets already masked) and, only when some binding wants it,
``deploy.progress`` for every output line.  This example tells the requester
when their job did not succeed, with a pointer to its last lines.
"""

from masterchief import Event, bind, say

NOT_OK = {"failed", "timed_out", "interrupted"}


@bind("event", "-|-", "deploy.finished")
def tell_requester(ev: Event) -> None:
    job = ev.payload
    if job["status"] not in NOT_OK or not job.get("channel") or not job.get("requester_nick"):
        return
    say(
        job["channel"],
        f"{job['requester_nick']}: your {job['mode']} of {job['module']} to {job['env']} "
        f"{job['status'].replace('_', ' ')} — !job {job['id']} shows the last lines",
    )
