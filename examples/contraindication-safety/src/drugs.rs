//! A small knowledge table: drug classes (so "allergic to penicillin" covers amoxicillin) and
//! pairs of drugs or classes that must not be combined. Names are lower case.

pub const CLASSES: &[(&str, &[&str])] = &[
    (
        "penicillin",
        &[
            "penicillin",
            "amoxicillin",
            "ampicillin",
            "piperacillin",
            "nafcillin",
            "oxacillin",
            "dicloxacillin",
        ],
    ),
    (
        "cephalosporin",
        &["cephalexin", "cefazolin", "ceftriaxone", "cefuroxime", "cefepime"],
    ),
    (
        "sulfonamide",
        &[
            "sulfamethoxazole",
            "trimethoprim-sulfamethoxazole",
            "tmp-smx",
            "sulfasalazine",
            "sulfadiazine",
        ],
    ),
    (
        "nsaid",
        &[
            "ibuprofen",
            "naproxen",
            "aspirin",
            "ketorolac",
            "indomethacin",
            "diclofenac",
            "celecoxib",
        ],
    ),
    (
        "nitrate",
        &["nitroglycerin", "isosorbide mononitrate", "isosorbide dinitrate"],
    ),
    ("pde5 inhibitor", &["sildenafil", "tadalafil", "vardenafil"]),
    (
        "maoi",
        &["phenelzine", "tranylcypromine", "selegiline", "isocarboxazid"],
    ),
    (
        "serotonergic",
        &[
            "fluoxetine",
            "sertraline",
            "paroxetine",
            "citalopram",
            "sumatriptan",
            "meperidine",
            "tramadol",
            "linezolid",
        ],
    ),
    ("macrolide", &["clarithromycin", "erythromycin"]),
    (
        "ace inhibitor",
        &["lisinopril", "enalapril", "ramipril", "captopril"],
    ),
    (
        "potassium-sparing",
        &["spironolactone", "eplerenone", "amiloride", "potassium chloride"],
    ),
];

/// Pairs (drug or class, drug or class) that interact dangerously.
pub const INTERACTIONS: &[(&str, &str)] = &[
    ("warfarin", "nsaid"),
    ("nitrate", "pde5 inhibitor"),
    ("maoi", "serotonergic"),
    ("methotrexate", "trimethoprim-sulfamethoxazole"),
    ("methotrexate", "tmp-smx"),
    ("simvastatin", "macrolide"),
    ("ace inhibitor", "potassium-sparing"),
];

/// Every drug a name stands for: the class's members, or the drug itself.
pub fn expand(name: &str) -> Vec<String> {
    let name = name.trim().trim_end_matches('s');
    for (class, members) in CLASSES {
        if name == *class || name.trim_end_matches(" drug") == *class {
            return members.iter().map(|m| m.to_string()).collect();
        }
    }
    if name == "sulfa" {
        return expand("sulfonamide");
    }
    vec![name.to_string()]
}

/// Every drug name the table knows, for finding drugs in free text.
pub fn known_drugs() -> impl Iterator<Item = &'static str> {
    let members = CLASSES.iter().flat_map(|(_, members)| members.iter().copied());
    let singles = INTERACTIONS
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .filter(|name| !CLASSES.iter().any(|(class, _)| class == name));
    members.chain(singles)
}
