"""CPU discovery: /proc parsing, cgroup limits, the vLLM CPU verdict and the catalog spec."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodes.accelerators import AcceleratorKind
from nodes.discovery import (
    CpuInfo,
    CpuProbe,
    FakeCpuProbe,
    LinuxCpuProbe,
    cpu_accelerator_for,
    cpu_info_from_proc,
    vllm_cpu_support,
)

GIB = 2**30


def _x86(model: str, flags: str, cores: list[tuple[int, int]]) -> str:
    return "\n\n".join(
        f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: {model}\n"
        f"physical id\t: {socket}\ncore id\t\t: {core}\ncpu cores\t: 2\nflags\t\t: {flags}\n"
        for n, (socket, core) in enumerate(cores)
    ) + "\n"


# AWS m7i (Sapphire Rapids): AVX-512 with bf16, VNNI and AMX; 4 vCPUs on 2 hyperthreaded cores.
SAPPHIRE_RAPIDS = _x86(
    "Intel(R) Xeon(R) Platinum 8488C",
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx lm avx f16c avx2 "
    "bmi2 erms avx512f avx512dq rdseed adx avx512ifma avx512cd sha_ni avx512bw avx512vl "
    "avx_vnni avx512_bf16 wbnoinvd avx512vbmi umip pku avx512_vbmi2 gfni vaes avx512_vnni "
    "avx512_bitalg avx512_vpopcntdq la57 rdpid serialize tsxldtrk amx_bf16 avx512_fp16 "
    "amx_tile amx_int8",
    [(0, 0), (0, 1), (0, 0), (0, 1)],
)
# A Kaby Lake R laptop: AVX2, no AVX-512.
LAPTOP = _x86(
    "Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz",
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ss ht tm pbe syscall nx lm "
    "pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 popcnt aes xsave avx f16c rdrand bmi1 avx2 "
    "smep bmi2 erms invpcid mpx rdseed adx smap clflushopt xsaveopt xsavec",
    [(0, 0), (0, 1), (0, 2), (0, 3), (0, 0), (0, 1), (0, 2), (0, 3)],
)
# An Atom-class x86 core without AVX at all.
OLD_X86 = _x86("Intel(R) Atom(TM) CPU C2750 @ 2.40GHz",
               "fpu sse sse2 ssse3 sse4_1 sse4_2 popcnt aes", [(0, 0), (0, 1)])
# AWS c7g (Graviton3, Neoverse-V1): no "model name", no core ids.
GRAVITON3 = "\n".join(
    f"processor\t: {n}\nBogoMIPS\t: 2100.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
    "asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat "
    "ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd40\n"
    "CPU revision\t: 1\n"
    for n in range(4)
)
POWER9 = "processor\t: 0\ncpu\t\t: POWER9, altivec supported\nclock\t\t: 2300.000000MHz\n\n"
MEMINFO = "MemTotal:       65536000 kB\nMemFree:        60000000 kB\nMemAvailable:   62000000 kB\n"


def _parse(cpuinfo: str, cpu_max: str | None = None, memory_max: str | None = None) -> CpuInfo:
    return cpu_info_from_proc(cpuinfo, MEMINFO, cpu_max=cpu_max, memory_max=memory_max)


@pytest.mark.parametrize(
    ("cpuinfo", "arch", "logical", "physical", "flags"),
    [
        (SAPPHIRE_RAPIDS, "x86_64", 4, 2,
         {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"}),
        (LAPTOP, "x86_64", 8, 4, {"avx2"}),
        (OLD_X86, "x86_64", 2, 2, set()),
        (GRAVITON3, "aarch64", 4, None, {"asimd", "sve", "bf16", "svebf16", "i8mm"}),
        (POWER9, "unknown", 1, None, set()),
    ],
    ids=["sapphire-rapids", "avx2-laptop", "old-x86", "graviton3", "power9"],
)
def test_cpuinfo_parsing(
    cpuinfo: str, arch: str, logical: int, physical: int | None, flags: set[str]
) -> None:
    info = _parse(cpuinfo)
    assert (info.architecture, info.logical_cores, info.physical_cores) == (arch, logical, physical)
    assert info.flags == flags
    assert info.memory_total_bytes == 65536000 * 1024


def test_model_names() -> None:
    assert _parse(SAPPHIRE_RAPIDS).model_name == "Intel(R) Xeon(R) Platinum 8488C"
    assert "Neoverse-V1" in _parse(GRAVITON3).model_name
    unknown_arm = GRAVITON3.replace("0xd40", "0xfff")
    assert _parse(unknown_arm).model_name == "CPU implementer 0x41 part 0xfff"


@pytest.mark.parametrize(
    ("cpuinfo", "ok", "expected_notes"),
    [
        (SAPPHIRE_RAPIDS, True, ["AVX-512", "avx512_bf16: native", "avx512_vnni", "AMX"]),
        (LAPTOP, True, ["AVX2 only", "no avx512_bf16"]),
        (OLD_X86, False, ["needs AVX2"]),
        (GRAVITON3, True, ["NEON", "SVE", "bf16"]),
        (GRAVITON3.replace(" asimd ", " "), False, ["needs it"]),
        (POWER9, False, ["x86_64 or aarch64"]),
    ],
    ids=["sapphire-rapids", "avx2-laptop", "old-x86", "graviton3", "arm-no-neon", "power9"],
)
def test_vllm_cpu_support(cpuinfo: str, ok: bool, expected_notes: list[str]) -> None:
    supported, notes = vllm_cpu_support(_parse(cpuinfo))
    assert supported is ok
    for expected in expected_notes:
        assert any(expected in note for note in notes), (expected, notes)


def test_avx2_laptop_gets_no_amx_or_vnni_notes() -> None:
    _, notes = vllm_cpu_support(_parse(LAPTOP))
    assert not any("AMX" in note or "vnni" in note for note in notes)


@pytest.mark.parametrize(
    ("cpu_max", "memory_max", "cores", "memory"),
    [
        (None, None, 8, 65536000 * 1024),
        ("max 100000\n", "max\n", 8, 65536000 * 1024),
        ("200000 100000\n", "8589934592\n", 2, 8 * GIB),
        ("150000 100000\n", None, 1, 65536000 * 1024),
        ("50000 100000\n", None, 1, 65536000 * 1024),
        ("6400000 100000\n", "999999999999999\n", 8, 65536000 * 1024),
    ],
    ids=["none", "unlimited", "2-cpus-8gib", "1.5-cpus", "half-cpu", "above-host"],
)
def test_cgroup_limits_cap_usable_resources(
    cpu_max: str | None, memory_max: str | None, cores: int, memory: int
) -> None:
    info = _parse(LAPTOP, cpu_max=cpu_max, memory_max=memory_max)
    assert (info.usable_cores, info.usable_memory_bytes) == (cores, memory)


def test_meminfo_without_memtotal_is_an_error() -> None:
    with pytest.raises(ValueError, match="MemTotal"):
        cpu_info_from_proc(LAPTOP, "MemFree: 1 kB\n")


def test_cpu_accelerator_for_uses_usable_resources() -> None:
    info = _parse(SAPPHIRE_RAPIDS, cpu_max="200000 100000", memory_max=str(8 * GIB))
    spec = cpu_accelerator_for(info)
    assert (spec.kind, spec.cores, spec.memory_gib) == (AcceleratorKind.CPU, 2, 8.0)
    assert spec.price_source != "operator"
    priced = cpu_accelerator_for(info, price_per_hour=0.25, memory_bandwidth_gbps=40.0)
    assert (priced.default_price_per_hour, priced.price_source) == (0.25, "operator")
    assert priced.memory_bandwidth_gbps == 40.0


def test_linux_probe_reads_injected_files(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(GRAVITON3)
    (tmp_path / "meminfo").write_text(MEMINFO)
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "cpu.max").write_text("300000 100000\n")
    (cgroup / "memory.max").write_text("max\n")
    probe = LinuxCpuProbe(tmp_path / "cpuinfo", tmp_path / "meminfo", cgroup)
    info = probe.cpu()
    assert (info.architecture, info.logical_cores, info.usable_cores) == ("aarch64", 4, 3)
    assert info.memory_limit_bytes is None


def test_linux_probe_without_meminfo_or_cgroup_falls_back(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(LAPTOP)
    info = LinuxCpuProbe(tmp_path / "cpuinfo", tmp_path / "absent", tmp_path / "absent").cpu()
    assert info.memory_total_bytes > 0
    assert (info.cpu_limit, info.memory_limit_bytes) == (None, None)


def test_empty_cpuinfo_falls_back_to_os_cpu_count(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text("")
    (tmp_path / "meminfo").write_text(MEMINFO)
    info = LinuxCpuProbe(tmp_path / "cpuinfo", tmp_path / "meminfo", tmp_path).cpu()
    assert info.logical_cores == (os.cpu_count() or 1)


def _probes() -> list[object]:
    return [
        pytest.param(FakeCpuProbe(_parse(SAPPHIRE_RAPIDS)), id="fake"),
        pytest.param(LinuxCpuProbe(), id="this-machine",
                     marks=pytest.mark.skipif(not Path("/proc/cpuinfo").exists(),
                                              reason="no /proc/cpuinfo")),
    ]


@pytest.mark.parametrize("probe", _probes())
def test_probe_contract(probe: CpuProbe) -> None:
    info = probe.cpu()
    assert info.logical_cores >= 1 and info.usable_cores >= 1
    assert info.physical_cores is None or 1 <= info.physical_cores <= info.logical_cores
    assert info.memory_total_bytes > 0
    assert info.flags <= {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                          "amx_tile", "asimd", "sve", "sve2", "bf16", "svebf16", "i8mm"}
    _, notes = vllm_cpu_support(info)
    assert notes
    spec = cpu_accelerator_for(info)
    assert spec.cores == info.usable_cores and spec.memory_gib > 0
