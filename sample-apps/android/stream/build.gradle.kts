// The stream sample app (Jetpack Compose); its logic is :shared's.
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.plugin.compose")
}

android {
    namespace = "dev.msocket.samples.android.stream"
    compileSdk = libs.versions.android.compile.sdk.get().toInt()

    defaultConfig {
        applicationId = "dev.msocket.samples.stream"
        minSdk = samples.versions.min.sdk.get().toInt()
        targetSdk = libs.versions.android.compile.sdk.get().toInt()
        versionCode = 1
        versionName = "0.1.0"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    buildFeatures {
        compose = true
    }
}

kotlin {
    jvmToolchain(libs.versions.jvm.toolchain.get().toInt())
}

dependencies {
    implementation(project(":shared"))
    implementation(platform(samples.compose.bom))
    implementation(samples.compose.ui)
    implementation(samples.compose.foundation)
    implementation(samples.compose.material3)
    implementation(samples.compose.ui.tooling.preview)
    debugImplementation(samples.compose.ui.tooling)
    implementation(samples.activity.compose)
    implementation(samples.lifecycle.viewmodel.compose)
    implementation(samples.lifecycle.runtime.compose)
    testImplementation(samples.junit)
}
