-- The PreSkool ERP core schema (sandbox and test copy): 18 tables, foreign keys, indexes.
CREATE TABLE academic_years (
    id          serial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    starts_on   date NOT NULL,
    ends_on     date NOT NULL,
    is_current  boolean NOT NULL DEFAULT false,
    CHECK (ends_on > starts_on)
);

CREATE TABLE roles (
    id    serial PRIMARY KEY,
    name  text NOT NULL UNIQUE
);

CREATE TABLE users (
    id             serial PRIMARY KEY,
    email          text NOT NULL UNIQUE,
    full_name      text NOT NULL,
    password_hash  text NOT NULL,
    is_active      boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_roles (
    user_id  integer NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role_id  integer NOT NULL REFERENCES roles(id),
    PRIMARY KEY (user_id, role_id)
);

CREATE TABLE staff (
    id          serial PRIMARY KEY,
    user_id     integer NOT NULL UNIQUE REFERENCES users(id),
    position    text NOT NULL,
    hired_on    date NOT NULL,
    salary      numeric(10,2) NOT NULL
);

CREATE TABLE teachers (
    id              serial PRIMARY KEY,
    staff_id        integer NOT NULL UNIQUE REFERENCES staff(id),
    qualification   text NOT NULL
);

CREATE TABLE classes (
    id                serial PRIMARY KEY,
    academic_year_id  integer NOT NULL REFERENCES academic_years(id),
    name              text NOT NULL,
    grade_level       smallint NOT NULL,
    UNIQUE (academic_year_id, name)
);

CREATE TABLE sections (
    id          serial PRIMARY KEY,
    class_id    integer NOT NULL REFERENCES classes(id),
    name        text NOT NULL,
    teacher_id  integer REFERENCES teachers(id),
    capacity    smallint NOT NULL DEFAULT 30,
    UNIQUE (class_id, name)
);

CREATE TABLE subjects (
    id     serial PRIMARY KEY,
    code   text NOT NULL UNIQUE,
    name   text NOT NULL
);

CREATE TABLE students (
    id             serial PRIMARY KEY,
    admission_no   text NOT NULL UNIQUE,
    first_name     text NOT NULL,
    last_name      text NOT NULL,
    date_of_birth  date NOT NULL,
    gender         char(1) NOT NULL CHECK (gender IN ('F', 'M', 'X')),
    address        text,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE guardians (
    id          serial PRIMARY KEY,
    student_id  integer NOT NULL REFERENCES students(id) ON DELETE CASCADE,
    full_name   text NOT NULL,
    relation    text NOT NULL,
    phone       text NOT NULL
);

CREATE TABLE enrollments (
    id                serial PRIMARY KEY,
    student_id        integer NOT NULL REFERENCES students(id),
    section_id        integer NOT NULL REFERENCES sections(id),
    academic_year_id  integer NOT NULL REFERENCES academic_years(id),
    enrolled_on       date NOT NULL,
    UNIQUE (student_id, academic_year_id)
);

CREATE TABLE attendance (
    id             bigserial PRIMARY KEY,
    enrollment_id  integer NOT NULL REFERENCES enrollments(id),
    day            date NOT NULL,
    status         text NOT NULL CHECK (status IN ('present', 'absent', 'late', 'excused')),
    note           text
);
CREATE INDEX attendance_day_idx ON attendance (day);
CREATE INDEX attendance_enrollment_idx ON attendance (enrollment_id);

CREATE TABLE exams (
    id                serial PRIMARY KEY,
    academic_year_id  integer NOT NULL REFERENCES academic_years(id),
    subject_id        integer NOT NULL REFERENCES subjects(id),
    class_id          integer NOT NULL REFERENCES classes(id),
    name              text NOT NULL,
    held_on           date NOT NULL,
    max_marks         smallint NOT NULL DEFAULT 100
);

CREATE TABLE grades (
    id             bigserial PRIMARY KEY,
    exam_id        integer NOT NULL REFERENCES exams(id),
    enrollment_id  integer NOT NULL REFERENCES enrollments(id),
    marks          numeric(5,2) NOT NULL,
    remarks        text,
    UNIQUE (exam_id, enrollment_id)
);

CREATE TABLE fees (
    id                serial PRIMARY KEY,
    academic_year_id  integer NOT NULL REFERENCES academic_years(id),
    name              text NOT NULL,
    amount            numeric(10,2) NOT NULL CHECK (amount >= 0)
);

CREATE TABLE invoices (
    id          serial PRIMARY KEY,
    student_id  integer NOT NULL REFERENCES students(id),
    fee_id      integer NOT NULL REFERENCES fees(id),
    issued_on   date NOT NULL,
    due_on      date NOT NULL,
    amount      numeric(10,2) NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid', 'void'))
);
CREATE INDEX invoices_student_idx ON invoices (student_id);

CREATE TABLE payments (
    id          serial PRIMARY KEY,
    invoice_id  integer NOT NULL REFERENCES invoices(id),
    paid_at     timestamptz NOT NULL,
    amount      numeric(10,2) NOT NULL CHECK (amount > 0),
    method      text NOT NULL,
    reference   text
);
CREATE INDEX payments_invoice_idx ON payments (invoice_id);
