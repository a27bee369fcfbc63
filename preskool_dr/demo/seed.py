"""Realistic PreSkool data, generated inside PostgreSQL (fast, deterministic, any scale).

scale 1.0 is about a million attendance rows (an 8 MB backup); the demo uses 0.5 (a
restore takes a few seconds, so the progress bar means something); the tests use 5 %.
"""

from __future__ import annotations

from importlib import resources

import psycopg


def schema_sql() -> str:
    return resources.files("preskool_dr.data").joinpath("preskool_schema.sql").read_text()


def _data_sql(scale: float) -> list[str]:
    students = max(50, int(10_000 * scale))
    sections_per_class = 3
    days = max(5, int(100 * min(1.0, scale * 4)))
    return [
        """INSERT INTO academic_years (name, starts_on, ends_on, is_current)
           SELECT (2020 + y) || '-' || (2021 + y), make_date(2020 + y, 6, 1),
                  make_date(2021 + y, 4, 30), y = 6
           FROM generate_series(0, 6) AS y""",
        """INSERT INTO roles (name) VALUES
           ('admin'), ('principal'), ('teacher'), ('accountant'), ('clerk'), ('parent')""",
        f"""INSERT INTO users (email, full_name, password_hash, created_at)
           SELECT 'user' || i || '@preskool.example', 'Staff Member ' || i,
                  '$argon2id$' || md5(i::text), timestamptz '2024-01-01' + i * interval '1 hour'
           FROM generate_series(1, {max(20, students // 20)}) AS i""",
        """INSERT INTO user_roles (user_id, role_id)
           SELECT id, 1 + id % 5 FROM users""",
        """INSERT INTO staff (user_id, position, hired_on, salary)
           SELECT id, CASE WHEN id % 5 = 2 THEN 'teacher' ELSE 'office' END,
                  date '2015-01-01' + (id * 37) % 3000, 30000 + (id * 7919) % 40000
           FROM users""",
        """INSERT INTO teachers (staff_id, qualification)
           SELECT id, CASE id % 3 WHEN 0 THEN 'M.Ed' WHEN 1 THEN 'B.Ed' ELSE 'PhD' END
           FROM staff WHERE position = 'teacher'""",
        """INSERT INTO classes (academic_year_id, name, grade_level)
           SELECT ay.id, 'Grade ' || g, g FROM academic_years ay, generate_series(1, 12) AS g
           WHERE ay.is_current""",
        f"""INSERT INTO sections (class_id, name, teacher_id, capacity)
           SELECT c.id, chr(64 + s),
                  (SELECT t.id FROM teachers t ORDER BY t.id
                   OFFSET ((c.id * 3 + s) % (SELECT count(*) FROM teachers)) LIMIT 1),
                  40
           FROM classes c, generate_series(1, {sections_per_class}) AS s""",
        """INSERT INTO subjects (code, name) VALUES
           ('MATH', 'Mathematics'), ('ENG', 'English'), ('SCI', 'Science'),
           ('HIST', 'History'), ('GEO', 'Geography'), ('ART', 'Art'), ('PE', 'Physical Education')""",
        f"""INSERT INTO students (admission_no, first_name, last_name, date_of_birth, gender,
                                 address, created_at)
           SELECT 'ADM' || lpad(i::text, 6, '0'),
                  (ARRAY['Asha','Ben','Chen','Dara','Elif','Femi','Gita','Hugo','Ines','Jon'])[1 + i % 10],
                  (ARRAY['Khan','Lopez','Mensah','Novak','Okafor','Patel','Quinn','Rossi'])[1 + i % 8],
                  date '2008-01-01' + (i * 13) % 4000,
                  (ARRAY['F','M','X'])[1 + i % 3],
                  i || ' School Road, Ward ' || (i % 40),
                  timestamptz '2025-06-01' + i * interval '7 minutes'
           FROM generate_series(1, {students}) AS i""",
        """INSERT INTO guardians (student_id, full_name, relation, phone)
           SELECT id, 'Guardian of ' || first_name, CASE id % 2 WHEN 0 THEN 'mother' ELSE 'father' END,
                  '+1-555-' || lpad((id % 10000)::text, 4, '0')
           FROM students""",
        """INSERT INTO enrollments (student_id, section_id, academic_year_id, enrolled_on)
           SELECT st.id, sec.id, c.academic_year_id, date '2026-06-01'
           FROM students st
           JOIN sections sec ON sec.id = 1 + (st.id % (SELECT count(*) FROM sections))
           JOIN classes c ON c.id = sec.class_id""",
        f"""INSERT INTO attendance (enrollment_id, day, status, note)
           SELECT e.id, date '2026-06-01' + d,
                  (ARRAY['present','present','present','present','present','present',
                         'late','absent','excused'])[1 + (e.id * 31 + d * 17) % 9],
                  CASE WHEN (e.id + d) % 23 = 0 THEN 'called guardian' END
           FROM enrollments e, generate_series(0, {days - 1}) AS d""",
        """INSERT INTO exams (academic_year_id, subject_id, class_id, name, held_on, max_marks)
           SELECT c.academic_year_id, s.id, c.id, t.name, date '2026-09-15' + t.offs, 100
           FROM classes c, subjects s,
                (VALUES ('Midterm', 0), ('Final', 120)) AS t(name, offs)""",
        """INSERT INTO grades (exam_id, enrollment_id, marks, remarks)
           SELECT ex.id, e.id, ((e.id * 37 + ex.id * 11) % 10000) / 100.0,
                  CASE WHEN (e.id + ex.id) % 17 = 0 THEN 'needs support' END
           FROM enrollments e
           JOIN sections sec ON sec.id = e.section_id
           JOIN exams ex ON ex.class_id = sec.class_id""",
        """INSERT INTO fees (academic_year_id, name, amount)
           SELECT ay.id, f.name, f.amount FROM academic_years ay,
                  (VALUES ('Tuition Q1', 1200.00), ('Tuition Q2', 1200.00),
                          ('Transport', 300.00), ('Library', 50.00)) AS f(name, amount)
           WHERE ay.is_current""",
        """INSERT INTO invoices (student_id, fee_id, issued_on, due_on, amount, status)
           SELECT st.id, f.id, date '2026-06-01', date '2026-07-01', f.amount,
                  CASE WHEN (st.id + f.id) % 4 = 0 THEN 'open' ELSE 'paid' END
           FROM students st, fees f""",
        """INSERT INTO payments (invoice_id, paid_at, amount, method, reference)
           SELECT id, timestamptz '2026-06-10' + (id % 500) * interval '1 hour', amount,
                  (ARRAY['card','bank','cash'])[1 + id % 3], 'TX' || md5(id::text)
           FROM invoices WHERE status = 'paid'""",
        "ANALYZE",
    ]


def seed_database(conninfo: str, *, password: str | None = None, scale: float = 1.0) -> None:
    """Create the PreSkool schema in an empty database and fill it with data."""
    with psycopg.connect(conninfo, password=password, autocommit=True) as conn:
        conn.execute(schema_sql())
        for statement in _data_sql(scale):
            conn.execute(statement)
