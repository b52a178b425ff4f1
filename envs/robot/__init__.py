"""The thin robot executor: any controller drives any robot, real or simulated, through a safety guard.

protocol.py  the robot contract (LeRobot-shaped), features, RobotError, controller_view
sim.py       SimRobot: a built-in env as a robot (ground truth under sim_* keys)
lerobot.py   LeRobotAdapter: a LeRobot robot behind the protocol (duck-typed, no lerobot import)
guard.py     SafetyGuard: bounds, max change per step, workspace, NaN/inf, rate limit, watchdog, e-stop
estop.py     EStop: signal / stop file / key latch
loop.py      ControlLoop: fixed-rate observe -> plan -> send with timing, optional asynchronous planning
wire.py      bridge wire format: signed auth frame (HMAC-SHA256) + JSON header + raw numpy frames, bounded decoding
server.py    RobotServer: a guarded robot over TCP (ZeroMQ), auth before work, replay refusal, watchdog hold
client.py    RemoteRobot: the planner side, signed requests, checked replies, timeouts and reconnects
keys.py      CurveZMQ key pairs (`wm robot keygen`), loopback check
"""

from envs.robot.protocol import Feature, Robot, RobotError, controller_view

__all__ = ["Feature", "Robot", "RobotError", "controller_view"]
