"""The MicroPython VM runner (tools/mpy/run.mjs) and the heap helper.

That the VM is MicroPython >= 1.22 is the environment's business: tools/setup_test_env.sh checks it.
"""

import re

import mpyvm


def test_device_package_importable_in_vm(vm):
    import ucrumb

    r = vm.run_vm("import ucrumb, ucrumb.cbor, ucrumb.mac\nprint(ucrumb.__version__, ucrumb.cbor.__file__)").check()
    assert r.out.split() == [ucrumb.__version__, "/lib/ucrumb/cbor.py"]


def test_vm_loads_mpy_compiled_by_mpy_cross(vm, tmp_path):
    vm.compile_tree(vm.DEVICE_DIR, tmp_path)
    r = vm.run_vm(
        "import ucrumb.cbor as c, ucrumb.mac as m\n"
        "print(c.__file__, m.__file__)\n"
        "assert c.loads(c.dumps({1: [b'x', 'y']})) == {1: [b'x', 'y']}\n",
        default_paths=False,
        paths=[f"{tmp_path}:/lib"],
    ).check()
    assert r.out.split() == ["/lib/ucrumb/cbor.mpy", "/lib/ucrumb/mac.mpy"]


def test_exit_status_and_output(vm, tmp_path):
    assert vm.run_vm("print('hi')").rc == 0
    assert vm.run_vm("raise SystemExit(3)").rc == 3
    assert vm.run_vm("import sys; sys.exit()").rc == 0
    r = vm.run_vm("def f():\n    1 // 0\nf()")
    assert r.rc == 1 and "ZeroDivisionError" in r.err and "line 2" in r.err
    r = vm.run_vm("x = (")
    assert r.rc == 1 and "SyntaxError" in r.err
    f = tmp_path / "prog.py"
    f.write_text("import sys\nprint(sys.argv[1:])\nsys.stdout.write('no newline')")
    r = vm.run_vm(file=f, args=["a", "b"])
    assert r.rc == 0 and r.out == "['a', 'b']\nno newline"


def test_runner_reports_setup_errors(vm):
    r = vm.run_vm(file="/nonexistent/x.py")
    assert r.rc == 2 and "no such file" in r.err


def test_heap_size_option(vm):
    # --heap sets the initial GC heap; the pyscript build grows it on demand.
    for heap in (64 * 1024, 1024 * 1024):
        r = vm.run_vm("import gc; gc.collect(); print(gc.mem_alloc() + gc.mem_free())", heap=heap).check()
        assert int(r.out) >= heap * 0.9


def test_heap_peak_helper(vm):
    assert vm.heap_peak("pass") == 0
    n = vm.heap_peak("x = bytearray(1000)")
    assert 1000 <= n <= 1100, n
    # two buffers alive at once count twice; GC is off so nothing is freed
    assert vm.heap_peak("a = bytearray(1000)\nb = bytearray(1000)") >= 2000
    setup = "import ucrumb.cbor as c\nE = c.dumps({1: 'dev-0001', 4: 1700000000, 9: [['/t/room1/temp', 1]], 7: bytes(8)})\n"
    dec = vm.heap_peak("c.loads(E)", setup=setup)
    enc = vm.heap_peak("c.dumps({1: 'dev-0001', 4: 1700000000, 9: [['/t/room1/temp', 1]], 7: bytes(8)})", setup=setup)
    mac = vm.heap_peak("m.hmac_sha256(b'k' * 32, E)", setup="import ucrumb.mac as m\n" + setup)
    print(f"heap: loads claims {dec} B, dumps claims {enc} B, hmac {mac} B")
    for v in (dec, enc, mac):
        assert 0 < v < 4096


def test_no_node_or_package_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(mpyvm, "PKG_MJS", tmp_path / "missing.mjs")
    try:
        mpyvm.check_vm()
    except mpyvm.VMUnavailable as e:
        assert "setup_test_env.sh" in str(e)
    else:
        raise AssertionError("missing npm package not detected")
    monkeypatch.setattr(mpyvm.shutil, "which", lambda name: None)
    try:
        mpyvm.check_vm()
    except mpyvm.VMUnavailable as e:
        assert re.search(r"Node\.js", str(e))
    else:
        raise AssertionError("missing node not detected")
