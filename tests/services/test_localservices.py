"""The local service launchers used by tests and benchmarks."""

from __future__ import annotations

import socket

import pytest

from crumb.tooling.localservices import RedisServer, ServiceFailed, ServiceMissing


def test_redis_server_starts_answers_and_stops():
    with RedisServer() as server:
        assert server.running and server.ping()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        proc = server.proc
    # Stopped. (Not tested by connecting: its port is let go, and another program may take it at once.)
    assert proc.poll() is not None and not server.running


def test_restart_keeps_the_port(own_redis):
    port = own_redis.port
    own_redis.stop()
    assert not own_redis.running and not own_redis.ping()
    own_redis.start()
    assert own_redis.port == port and own_redis.ping()


def test_a_stopped_server_holds_its_port_for_the_restart(own_redis):
    own_redis.stop()
    with socket.socket() as other, pytest.raises(OSError):  # no other program can take it meanwhile
        other.bind(("127.0.0.1", own_redis.port))
    with pytest.raises(OSError):  # and it refuses connections
        socket.create_connection(("127.0.0.1", own_redis.port), timeout=5)


def test_mosquitto_answers_connack(mosquitto):
    assert mosquitto.running and mosquitto.ping()


def test_a_missing_program_fails_loudly_with_the_install_command():
    class Nothing(RedisServer):
        program = "crumb-no-such-server"

    with pytest.raises(ServiceMissing, match="setup_test_env.sh"):
        Nothing().start()


def test_a_server_that_cannot_start_reports_its_log(redis_server):
    taken = RedisServer(port=redis_server.port)  # the port is in use
    taken.start_timeout = 3
    with pytest.raises(ServiceFailed, match="did not start"):
        taken.start()
    taken.close()
