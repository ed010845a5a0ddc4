import pytest

from interpretgan.params import ParameterError, choice, parse_attacks, parse_bool, parse_epsilon, parse_int, resolve
from interpretgan.profiles import PROFILES


@pytest.mark.parametrize("value, expected", [(0.3, 0.3), ("0.3", 0.3), ("8/255", 8 / 255), (" 2/255 ", 2 / 255),
                                             (1, 1.0), ("1", 1.0)])
def test_epsilon_accepts_numbers_and_fractions(value, expected):
    assert parse_epsilon(value) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("value", [-1, 0, "0", 1.5, "abc", "8/0", None, "-8/255"])
def test_epsilon_rejects_values_outside_unit_interval(value):
    with pytest.raises(ParameterError, match="epsilon"):
        parse_epsilon(value)


def test_choice_error_names_parameter_and_allowed_values():
    with pytest.raises(ParameterError) as err:
        choice("pooling", "foo", ("max", "avg"))
    assert "'pooling'" in str(err.value) and "max, avg" in str(err.value) and "'foo'" in str(err.value)
    assert choice("pooling", " AVG ", ("max", "avg")) == "avg"


def test_attacks_from_list_or_comma_string():
    assert parse_attacks("fgsm, PGD40,mpgd40") == ["fgsm", "pgd40", "mpgd40"]
    assert parse_attacks(["pgd100", "pgd100"]) == ["pgd100"]
    for bad in ("cw", "pgd", "pgd0", "", [], "fgsm,apgd"):
        with pytest.raises(ParameterError, match="attacks"):
            parse_attacks(bad)


def test_int_and_bool_parsing():
    assert parse_int("3", "seed") == 3 and parse_int(0, "seed") == 0
    for bad in (-1, "x", 1.5, True):
        with pytest.raises(ParameterError, match="seed"):
            parse_int(bad, "seed")
    assert parse_bool("True", "retrain") is True and parse_bool("no", "retrain") is False
    with pytest.raises(ParameterError, match="retrain"):
        parse_bool("maybe", "retrain")


def test_resolve_profiles_and_unknown_parameters():
    p = resolve(profile="smoke", pooling="avg", epsilon="8/255", data_root="None")
    assert p.settings is PROFILES["smoke"] and p.pooling == "avg" and p.data_root is None
    with pytest.raises(ParameterError, match="smoke, default, paper"):
        resolve(profile="huge")
    with pytest.raises(ParameterError, match="unknown parameter 'epsilom'"):
        resolve(epsilom=0.3)


def test_profiles_default_natural_training_matches_the_paper():
    d, paper = PROFILES["default"], PROFILES["paper"]
    for prof in (d, paper):
        assert (prof.epochs, prof.lr, prof.lr_milestones, prof.lr_gamma, prof.batch_size) == (10, 0.01, (5,), 0.1, 128)
        assert prof.n_train is None
    assert paper.n_attack is None and d.n_attack >= 2000


def test_paper_profile_adversarial_training_is_the_authors():
    mnist, cifar = PROFILES["paper"].atta["mnist"], PROFILES["paper"].atta["cifar10"]
    assert (mnist.eps, mnist.step, mnist.epochs, mnist.lr, mnist.lr_milestones, mnist.beta, mnist.batch_size) == \
        (0.3, 0.01, 60, 0.01, (55,), 6.0, 128)
    assert mnist.n_train is None and mnist.reset_every is None and not mnist.augment
    assert (cifar.eps, cifar.step, cifar.reset_every, cifar.batch_size, cifar.epochs, cifar.lr, cifar.beta) == \
        (0.031, 0.015, 10, 64, 38, 0.1, 6.0)
    assert cifar.augment and (cifar.eval_steps, cifar.eval_step) == (20, 0.003)
    assert PROFILES["paper"].cifar_archs["wrn"] == {"arch": "wrn", "depth": 34, "widen_factor": 10}
    d = PROFILES["default"]
    # the default's buffer reaches eps 0.3 and then trains there for a few epochs
    assert d.atta["mnist"].eps == 0.3 and d.atta["mnist"].step * d.atta["mnist"].epochs >= 1.5 * 0.3
    assert len(d.pooling_seeds) >= 3 and d.n_pooling >= 2000 and d.n_apgd >= 1000 and len(d.cifar_seeds) >= 2


def test_training_accepts_atta():
    assert resolve(training="ATTA").training == "atta"
    with pytest.raises(ParameterError, match="natural, atta"):
        resolve(training="trades")


def test_attack_names_are_bounded_in_steps_and_the_error_says_the_bound():
    """`-p attacks pgd999999999` trained a model and began a days-long attack; names now stop at MAX_STEPS steps,
    in the grammar itself (attacks.parse_attack_name), so notebooks, make_attack and evaluate all refuse them."""
    from interpretgan import attacks
    from interpretgan.params import parse_attack

    assert attacks.MAX_STEPS == 1000
    assert parse_attacks("pgd1000, mpgd1000") == ["pgd1000", "mpgd1000"]  # the bound itself is allowed
    assert attacks.parse_attack_name("pgd1000") == ("pgd", 1000)
    for bad in ("pgd1001", "pgd999999999", "mpgd5000"):
        with pytest.raises(ParameterError, match=r"'attacks'.*k a whole number in 1\.\.1000"):
            parse_attacks(f"fgsm, {bad}")
        with pytest.raises(ParameterError, match=r"'attack'.*k a whole number in 1\.\.1000"):
            parse_attack(bad)
        with pytest.raises(ValueError, match="at most 1,000"):
            attacks.parse_attack_name(bad)
        with pytest.raises(ValueError, match="at most 1,000"):
            attacks.make_attack(bad, 0.3)
    with pytest.raises(ParameterError, match="'attacks'"):
        resolve(attacks="pgd999999999")


def test_data_root_is_checked_with_the_other_parameters(tmp_path, monkeypatch):
    """A data root that does not exist stops `resolve` (the notebooks' second cell), naming `data_root`, instead of
    the first cell that reads data; None defers to $INTERPRETGAN_DATA, which is checked the same way."""
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ParameterError, match=r"parameter 'data_root' must be an existing folder.*no-such-folder"):
        resolve(profile="smoke", data_root=str(missing))
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder")
    with pytest.raises(ParameterError, match="'data_root'"):
        resolve(data_root=str(a_file))
    assert not missing.exists()  # nothing created under a bad root
    assert resolve(data_root=str(tmp_path)).data_root == str(tmp_path)
    monkeypatch.setenv("INTERPRETGAN_DATA", str(missing))
    with pytest.raises(ParameterError, match=r"INTERPRETGAN_DATA \(parameter 'data_root' is None\)"):
        resolve(data_root=None)
    assert resolve(data_root=str(tmp_path)).data_root == str(tmp_path)  # an explicit root wins over the variable
    monkeypatch.delenv("INTERPRETGAN_DATA")
    assert resolve(data_root="None").data_root is None  # <repo>/data: left to the loaders (they may download)


def test_cifar_test_is_the_profiles_all_or_a_count():
    from interpretgan.params import ParameterError, parse_cifar_test

    assert parse_cifar_test(None) is None and parse_cifar_test("None") is None
    assert parse_cifar_test("all") == "all" and parse_cifar_test(" ALL ") == "all"
    assert parse_cifar_test(1000) == 1000 and parse_cifar_test("2,000") == 2000
    for bad in (0, -3, "x", True, 2.5):
        with pytest.raises(ParameterError, match="cifar_test"):
            parse_cifar_test(bad)
