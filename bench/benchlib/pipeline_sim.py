"""A discrete-event simulation of decoupled stages on several devices: examples/s per schedule.

A network of `blocks` equal hidden blocks and a head is cut into `devices`
contiguous stages, one per device. `costs` gives the seconds of each piece
(`PIECES`: forward, synthesizer, backward, update) of one block and of the
head; the head's are added to the last stage's. Each device runs one task
at a time, each directed link carries one transfer at a time (`latency +
activation_bytes / bandwidth`), and a task starts as soon as its inputs and
its device are free.

Two blocks on two devices, one second of forward, two of backward, one of
update and free links: backprop waits for the whole backward pass (7 s a
step), the pipelined schedule runs both stages at once (4 s a step):

>>> costs = {"block": {"forward": 1.0, "synthesizer": 0.0, "backward": 2.0, "update": 1.0},
...          "head": dict.fromkeys(PIECES, 0.0)}
>>> [simulate(costs, 2, schedule, blocks=2, batch_size=28, activation_bytes=0)
...  for schedule in SCHEDULES]
[4.0, 5.6, 7.0]
"""

import math

PIECES = ("forward", "synthesizer", "backward", "update")
SCHEDULES = ("backprop", "dni", "pipelined")


def simulate(costs, devices, schedule, bandwidth=math.inf, latency=0.0, *, blocks, batch_size,
             activation_bytes, steps=24):
    """Steady-state examples/s of `schedule` on `devices` devices.

    Args:
        costs: `{"block": {piece: seconds}, "head": {piece: seconds}}` over `PIECES`.
        devices: the number of devices; it must divide `blocks`.
        schedule: "backprop" (forward, then backward from the loss down, then
            updates; the synthesizer costs are left out), "dni"
            (placed-synchronous DNI: a stage's backward starts from its ĝ; the
            synthesizers regress on the gradient sent back) or "pipelined"
            (stage k consumes stage k−1's output of the previous step).
        bandwidth: bytes/s of each directed link between neighbouring devices.
        latency: seconds per transfer.
        blocks: hidden blocks of the network.
        batch_size: examples per step.
        activation_bytes: bytes of one transfer (an activation or its gradient).
        steps: steps simulated; the rate is measured over the second half.

    Every schedule makes one step per call: the next step starts when all
    tasks of a step are done.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")
    if devices < 1 or blocks % devices:
        raise ValueError(f"`devices` must divide `blocks` ({blocks}), got {devices}.")
    per = blocks // devices
    stage_cost = {piece: per * costs["block"][piece] for piece in PIECES}
    last_cost = {piece: stage_cost[piece] + costs["head"][piece] for piece in PIECES}
    if schedule == "backprop":
        stage_cost["synthesizer"] = last_cost["synthesizer"] = 0.0
    cost = [last_cost if k == devices - 1 else stage_cost for k in range(devices)]
    transfer = latency + activation_bytes / bandwidth
    device_free = [0.0] * devices
    link_free = {}
    buffered = [0.0] * devices      # when stage k's input of the previous step arrived (pipelined)
    finish_of_step = []
    start = 0.0

    def run(device, ready, seconds):
        begin = max(ready, device_free[device])
        device_free[device] = begin + seconds
        return begin + seconds

    def send(source, target, ready):
        key = (source, target)
        begin = max(ready, link_free.get(key, 0.0))
        link_free[key] = begin + transfer
        return begin + transfer

    for _ in range(steps):
        forward_done = [0.0] * devices
        arrived = start
        new_buffer = [0.0] * devices
        for k in range(devices):
            ready = start if k == 0 else (max(start, buffered[k]) if schedule == "pipelined"
                                          else arrived)
            forward_done[k] = run(k, ready, cost[k]["forward"])
            if k + 1 < devices:
                arrived = send(k, k + 1, forward_done[k])
                new_buffer[k + 1] = arrived
        ends = []
        if schedule == "backprop":
            gradient = forward_done[-1]
            for k in reversed(range(devices)):
                done = run(k, gradient, cost[k]["backward"])
                ends.append(run(k, done, cost[k]["update"]))
                gradient = send(k, k - 1, done) if k else done
        else:
            synthesized = [run(k, forward_done[k], cost[k]["synthesizer"])
                           for k in range(devices)]
            backward = [run(k, synthesized[k], cost[k]["backward"]) for k in range(devices)]
            for k in range(devices):
                ends.append(run(k, backward[k], cost[k]["update"]))
                if k:   # the gradient at stage k's input is stage k−1's regression target
                    ends.append(send(k, k - 1, backward[k]))
        finish_of_step.append(max(ends + device_free))
        buffered = new_buffer
        start = finish_of_step[-1]
    half = steps // 2
    seconds_per_step = (finish_of_step[-1] - finish_of_step[half - 1]) / (steps - half)
    return batch_size / seconds_per_step
