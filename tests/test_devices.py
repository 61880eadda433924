"""SAS-MRAM and MTJ physics: values by hand, monotonic properties, write counting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from imcsim.devices.switching import (
    precessional_error_rate,
    thermal_switch_probability,
    write_error_rate,
)


def test_sas_mram_derived_values_by_hand(hardware):
    dev = hardware.device
    c = dev.card
    area = math.pi / 4 * 100e-9 * 50e-9
    assert dev.mtj.area_m2 == pytest.approx(area)
    r_p = 10e-12 / area  # RA = 10 Ohm um^2
    assert dev.mtj.r_p_ohm == pytest.approx(r_p)
    assert dev.mtj.r_ap0_ohm == pytest.approx(r_p * 2.5)  # TMR 150 %
    # beta-W strip: 200 uOhm cm * (4 x 150 nm) / (250 nm x 8 nm) = 600 Ohm
    assert dev.r_hm_ohm == pytest.approx(2e-6 * 600e-9 / (250e-9 * 8e-9))
    assert dev.ic0_sot_a == pytest.approx(4e11 * 250e-9 * 8e-9)
    # macrospin I_c0 = 4 e alpha Delta k T / (hbar eta), eta = P / (2 (1 + P^2)) for P->AP
    eta = 0.4 / (2 * (1 + 0.16))
    assert dev.mtj.ic0_p_to_ap_a == pytest.approx(4 * 1.602176634e-19 * 0.01 * 60 * 1.380649e-23 * 300
                                                  / (1.054571817e-34 * eta), rel=1e-6)
    # every pulse costs v_supply x I x t
    w = c.write
    assert dev.e_reset_j == pytest.approx(w.v_supply_v * w.i_reset_a * w.t_reset_s)
    assert dev.e_stt_per_bit_j == pytest.approx(w.v_supply_v * w.i_stt_a * w.t_set_s)
    # group write energy grows with the number of set bits
    energies = [dev.group_write_energy_j(k) for k in range(5)]
    assert energies == sorted(energies)
    assert energies[0] == pytest.approx(dev.e_reset_j)


def test_sas_group_write_counting(hardware):
    dev = hardware.device
    old = np.array([[1, 0, 0, 0, 1, 1, 0, 0]], dtype=np.uint8)
    new = np.array([[1, 0, 0, 0, 0, 1, 1, 0]], dtype=np.uint8)
    ev = dev.count_writes(old, new)
    # group 0 unchanged: not written; group 1 changed: one reset, one set, 2 STT bits
    assert ev.counts == {"reset_pulse": 1, "set_pulse": 1, "stt_assist": 2}
    # reset switches the bits that were 1 (4, 5); set switches bits ending at 1 (5, 6)
    assert ev.cell_writes.tolist() == [[0, 0, 0, 0, 1, 2, 1, 0]]
    same = dev.count_writes(old, old)
    assert same.counts == {"reset_pulse": 0, "set_pulse": 0, "stt_assist": 0}
    assert not same.cell_writes.any()
    cleared = dev.count_writes(old, np.zeros_like(old))
    assert cleared.counts == {"reset_pulse": 2, "set_pulse": 0, "stt_assist": 0}


def test_switching_regimes():
    # Far below critical, a short pulse essentially never switches.
    assert thermal_switch_probability(0.1, 1e-9, 60, 1e-9) < 1e-15
    # Below critical the precessional channel does not act.
    assert precessional_error_rate(0.9, 1e-9, 60, 1e-10) == 1.0
    # Well above critical and long enough, the error rate is tiny.
    assert write_error_rate(3.0, 2e-9, 60, 1e-9, 1e-10) < 1e-12


@given(st.floats(0.5, 3.0), st.floats(0.5, 3.0))
def test_higher_tmr_never_lowers_sense_margin(t1, t2):
    from imcsim.devices.mtj import MTJ, MTJParams

    base = dict(length="100 nm", width="50 nm", ra="10 Ohm*um^2", v_half="0.5 V", delta=60, tau0="1 ns",
                damping=0.01, polarization=0.4, ms="1e6 A/m", free_layer_thickness="0.6 nm",
                curie_temperature="1420 K", polarization_decay=2e-5, v_breakdown="1.2 V")
    lo, hi = sorted((t1, t2))
    m_lo = MTJ.from_params(MTJParams.model_validate({**base, "tmr": lo}))
    m_hi = MTJ.from_params(MTJParams.model_validate({**base, "tmr": hi}))
    assert m_hi.sense_margin_a(0.25) >= m_lo.sense_margin_a(0.25)


def test_all_action_energies_non_negative(hardware):
    for key, spec in hardware.macro.actions.items():
        assert spec.cost.energy_j >= 0, key
        assert spec.cost.latency_s >= 0, key


@given(st.integers(1, 4), st.integers(1, 13), st.integers(0, 2**32 - 1))
def test_sas_group_writes_match_a_direct_count(rows, cols, seed):
    from imcsim.devices.sas_mram import _group_writes

    rng = np.random.default_rng(seed)
    old = rng.integers(0, 2, (rows, cols), dtype=np.uint8)
    new = np.where(rng.random((rows, cols)) < 0.3, 1 - old, old).astype(np.uint8)
    n = 4
    resets = sets = stt = 0
    expect = np.zeros((rows, cols), dtype=np.int32)
    for r in range(rows):
        for g in range(0, cols, n):
            o, w = old[r, g : g + n], new[r, g : g + n]
            if (o != w).any():
                resets += 1
                sets += int(w.any())
                stt += int(w.sum())
                expect[r, g : g + n] = o.astype(np.int32) + w
    got = _group_writes(old, new, n)
    assert (got[0], got[1], got[2]) == (resets, sets, stt)
    assert np.array_equal(got[3], expect)
